// Command spike-go-vectors produces and checks interoperability vectors for
// the Rust spike-crypto crate, using the Go code SPIKE itself runs:
// spike-sdk-go's crypto.ComputeShares / crypto.ComputeRootKeyFromShards
// (cloudflare/circl secretsharing over P-256) and Go's AES-256-GCM.
//
// Usage:
//
//	go run . gen          > vectors.json   # print Go-produced vectors
//	go run . open FILE                     # verify vectors produced elsewhere
//
// `open` checks every entry of FILE (same JSON schema as `gen`): ciphertexts
// must open to the plaintext, shards must equal the SDK's shares for the root
// key, and every listed subset must combine to the root key with the SDK.
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
	"github.com/spiffe/spike-sdk-go/config/env"
	"github.com/spiffe/spike-sdk-go/crypto"
)

// Vectors is the whole file.
type Vectors struct {
	Comment         string            `json:"comment"`
	Shamir          []ShamirVector    `json:"shamir"`
	AESGCM          []AESVector       `json:"aes_gcm"`
	Stream          []StreamVector    `json:"stream"`
	BootstrapVerify []BootstrapVector `json:"bootstrap_verify"`
}

// ShamirVector is one root key split with one (shares, threshold) pair.
type ShamirVector struct {
	RootKey   string        `json:"root_key"`
	Shares    int           `json:"shares"`
	Threshold int           `json:"threshold"`
	Shards    []ShardVector `json:"shards"`
	Subsets   []Subset      `json:"subsets"`
}

// ShardVector is one share: id, 32-byte value as hex and recovery-file text.
type ShardVector struct {
	ID    uint64 `json:"id"`
	Value string `json:"value"`
	Text  string `json:"text"`
}

// Subset is a list of share ids and the key they reconstruct.
type Subset struct {
	IDs     []uint64 `json:"ids"`
	RootKey string   `json:"root_key"`
}

// AESVector is one AES-256-GCM encryption (no AAD, tag appended).
type AESVector struct {
	Key        string `json:"key"`
	Nonce      string `json:"nonce"`
	Plaintext  string `json:"plaintext"`
	Ciphertext string `json:"ciphertext"`
}

// StreamVector is one cipher-API stream body: 0x01 || nonce || ct||tag.
type StreamVector struct {
	Key       string `json:"key"`
	Plaintext string `json:"plaintext"`
	Data      string `json:"data"`
}

// BootstrapVector is one Bootstrap -> Nexus verify probe and its answer.
type BootstrapVector struct {
	Key        string `json:"key"`
	RandomText string `json:"random_text"`
	Nonce      string `json:"nonce"`
	Ciphertext string `json:"ciphertext"`
	Hash       string `json:"hash"`
}

// Fixed root keys: 1, an arbitrary mid-range value, a key with a high top
// byte, and n-1 (the largest valid P-256 scalar).
var rootKeys = []string{
	"0000000000000000000000000000000000000000000000000000000000000001",
	"5350494b452d7273207465737420766563746f7220726f6f74206b6579203032",
	"f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff",
	"ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550",
}

var params = [][2]int{{3, 2}, {5, 3}}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "gen":
		v := generate()
		if err := check(v); err != nil {
			fail("self-check of generated vectors: %v", err)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			fail("marshal: %v", err)
		}
	case "open":
		if len(os.Args) != 3 {
			usage()
		}
		raw, err := os.ReadFile(os.Args[2])
		if err != nil {
			fail("read: %v", err)
		}
		var v Vectors
		if err := json.Unmarshal(raw, &v); err != nil {
			fail("parse: %v", err)
		}
		if err := check(v); err != nil {
			fail("%v", err)
		}
		fmt.Fprintf(os.Stderr,
			"ok: %d shamir, %d aes-gcm, %d stream, %d bootstrap vectors verified by Go\n",
			len(v.Shamir), len(v.AESGCM), len(v.Stream), len(v.BootstrapVerify))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: spike-go-vectors gen | open FILE")
	os.Exit(2)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
	os.Exit(1)
}

// setShamirEnv configures the SDK the way Nexus is configured: the SDK reads
// the share count and threshold from the environment.
func setShamirEnv(shares, threshold int) {
	_ = os.Setenv(env.NexusShamirShares, strconv.Itoa(shares))
	_ = os.Setenv(env.NexusShamirThreshold, strconv.Itoa(threshold))
}

func decodeKey(h string) *[32]byte {
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		fail("bad 32-byte hex %q", h)
	}
	var k [32]byte
	copy(k[:], b)
	return &k
}

// combinations returns every k-element subset of 1..n in lexicographic order.
func combinations(n, k int) [][]uint64 {
	var out [][]uint64
	var rec func(start int, cur []uint64)
	rec = func(start int, cur []uint64) {
		if len(cur) == k {
			out = append(out, append([]uint64(nil), cur...))
			return
		}
		for i := start; i <= n; i++ {
			rec(i+1, append(cur, uint64(i)))
		}
	}
	rec(1, nil)
	return out
}

func newGCM(key *[32]byte) cipher.AEAD {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		fail("aes: %v", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		fail("gcm: %v", err)
	}
	return gcm
}

func randomNonce() []byte {
	nonce := make([]byte, crypto.GCMNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		fail("rand: %v", err)
	}
	return nonce
}

func generate() Vectors {
	v := Vectors{Comment: "Generated by tools/go-vectors (spike-sdk-go v0.19.9, circl v1.6.3). " +
		"Regenerate: cd tools/go-vectors && go run . gen > ../../crates/spike-crypto/tests/data/go-vectors.json"}

	for _, rkHex := range rootKeys {
		for _, p := range params {
			shares, threshold := p[0], p[1]
			setShamirEnv(shares, threshold)
			rk := decodeKey(rkHex)
			_, computed := crypto.ComputeShares(rk)
			sv := ShamirVector{RootKey: rkHex, Shares: shares, Threshold: threshold}
			values := map[uint64]*[32]byte{}
			for _, s := range computed {
				raw, err := s.Value.MarshalBinary()
				if err != nil || len(raw) != 32 {
					fail("marshal share: %v", err)
				}
				var val [32]byte
				copy(val[:], raw)
				id := uint64(len(sv.Shards) + 1)
				values[id] = &val
				sv.Shards = append(sv.Shards, ShardVector{
					ID:    id,
					Value: hex.EncodeToString(val[:]),
					// Same formatting as `spike operator recover`.
					Text: fmt.Sprintf("spike:%d:%s", id, hex.EncodeToString(val[:])),
				})
			}
			for _, ids := range combinations(shares, threshold) {
				shards := make([]crypto.ShamirShard, 0, len(ids))
				for _, id := range ids {
					shards = append(shards, crypto.ShamirShard{ID: id, Value: values[id]})
				}
				got := crypto.ComputeRootKeyFromShards(shards)
				sv.Subsets = append(sv.Subsets, Subset{IDs: ids, RootKey: hex.EncodeToString(got[:])})
			}
			v.Shamir = append(v.Shamir, sv)
		}
	}

	plaintexts := [][]byte{
		{},
		[]byte("hello, SPIKE"),
		[]byte(`{"password":"s3cr3t","username":"admin"}`),
		make([]byte, 1000),
	}
	for i := range plaintexts[3] {
		plaintexts[3][i] = byte(i * 7)
	}
	for i, pt := range plaintexts {
		key := decodeKey(rootKeys[i%len(rootKeys)])
		gcm := newGCM(key)
		nonce := randomNonce()
		ct := gcm.Seal(nil, nonce, pt, nil)
		v.AESGCM = append(v.AESGCM, AESVector{
			Key: hex.EncodeToString(key[:]), Nonce: hex.EncodeToString(nonce),
			Plaintext: hex.EncodeToString(pt), Ciphertext: hex.EncodeToString(ct),
		})

		// Stream mode as Nexus writes it: version byte, nonce, ciphertext.
		nonce = randomNonce()
		data := append([]byte{1}, nonce...)
		data = gcm.Seal(data, nonce, pt, nil)
		v.Stream = append(v.Stream, StreamVector{
			Key: hex.EncodeToString(key[:]), Plaintext: hex.EncodeToString(pt),
			Data: hex.EncodeToString(data),
		})
	}

	// Bootstrap verify: hex(32 random bytes) sealed under the root key;
	// Nexus answers hex(SHA-256(text)).
	key := decodeKey(rootKeys[1])
	text, sdkErr := crypto.AES256Seed()
	if sdkErr != nil {
		fail("seed: %v", sdkErr)
	}
	nonce := randomNonce()
	ct := newGCM(key).Seal(nil, nonce, []byte(text), nil)
	sum := sha256.Sum256([]byte(text))
	v.BootstrapVerify = append(v.BootstrapVerify, BootstrapVector{
		Key: hex.EncodeToString(key[:]), RandomText: text, Nonce: hex.EncodeToString(nonce),
		Ciphertext: hex.EncodeToString(ct), Hash: hex.EncodeToString(sum[:]),
	})
	return v
}

func decodeHex(what, h string) ([]byte, error) {
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("%s: bad hex: %v", what, err)
	}
	return b, nil
}

func check(v Vectors) error {
	for i, sv := range v.Shamir {
		if err := checkShamir(sv); err != nil {
			return fmt.Errorf("shamir[%d] (%d,%d): %w", i, sv.Shares, sv.Threshold, err)
		}
	}
	for i, av := range v.AESGCM {
		key := decodeKey(av.Key)
		nonce, err := decodeHex("nonce", av.Nonce)
		if err != nil {
			return err
		}
		ct, err := decodeHex("ciphertext", av.Ciphertext)
		if err != nil {
			return err
		}
		if len(nonce) != crypto.GCMNonceSize {
			return fmt.Errorf("aes_gcm[%d]: nonce length %d", i, len(nonce))
		}
		pt, err := newGCM(key).Open(nil, nonce, ct, nil)
		if err != nil {
			return fmt.Errorf("aes_gcm[%d]: open: %v", i, err)
		}
		if hex.EncodeToString(pt) != av.Plaintext {
			return fmt.Errorf("aes_gcm[%d]: plaintext mismatch", i)
		}
	}
	for i, sv := range v.Stream {
		key := decodeKey(sv.Key)
		data, err := decodeHex("data", sv.Data)
		if err != nil {
			return err
		}
		if len(data) < 1+crypto.GCMNonceSize || data[0] != 1 {
			return fmt.Errorf("stream[%d]: bad envelope", i)
		}
		nonce, ct := data[1:1+crypto.GCMNonceSize], data[1+crypto.GCMNonceSize:]
		pt, err := newGCM(key).Open(nil, nonce, ct, nil)
		if err != nil {
			return fmt.Errorf("stream[%d]: open: %v", i, err)
		}
		if hex.EncodeToString(pt) != sv.Plaintext {
			return fmt.Errorf("stream[%d]: plaintext mismatch", i)
		}
	}
	for i, bv := range v.BootstrapVerify {
		key := decodeKey(bv.Key)
		nonce, err := decodeHex("nonce", bv.Nonce)
		if err != nil {
			return err
		}
		ct, err := decodeHex("ciphertext", bv.Ciphertext)
		if err != nil {
			return err
		}
		pt, err := newGCM(key).Open(nil, nonce, ct, nil)
		if err != nil {
			return fmt.Errorf("bootstrap_verify[%d]: open: %v", i, err)
		}
		if string(pt) != bv.RandomText {
			return fmt.Errorf("bootstrap_verify[%d]: text mismatch", i)
		}
		sum := sha256.Sum256(pt)
		if hex.EncodeToString(sum[:]) != bv.Hash {
			return fmt.Errorf("bootstrap_verify[%d]: hash mismatch", i)
		}
	}
	return nil
}

func checkShamir(sv ShamirVector) error {
	setShamirEnv(sv.Shares, sv.Threshold)
	rk := decodeKey(sv.RootKey)
	_, computed := crypto.ComputeShares(rk)
	if len(computed) != len(sv.Shards) {
		return fmt.Errorf("share count %d, SDK made %d", len(sv.Shards), len(computed))
	}
	values := map[uint64]*[32]byte{}
	for i, s := range sv.Shards {
		raw, err := computed[i].Value.MarshalBinary()
		if err != nil {
			return err
		}
		if s.ID != uint64(i+1) || s.Value != hex.EncodeToString(raw) {
			return fmt.Errorf("shard %d differs from the SDK's share", s.ID)
		}
		if s.Text != "" && s.Text != fmt.Sprintf("spike:%d:%s", s.ID, s.Value) {
			return fmt.Errorf("shard %d text %q", s.ID, s.Text)
		}
		values[s.ID] = decodeKey(s.Value)
	}
	subsets := sv.Subsets
	if len(subsets) == 0 {
		subsets = []Subset{{IDs: ids(sv.Threshold), RootKey: sv.RootKey}}
	}
	for _, sub := range subsets {
		shards := make([]crypto.ShamirShard, 0, len(sub.IDs))
		for _, id := range sub.IDs {
			val, ok := values[id]
			if !ok {
				return fmt.Errorf("subset uses unknown id %d", id)
			}
			shards = append(shards, crypto.ShamirShard{ID: id, Value: val})
		}
		got := hex.EncodeToString(crypto.ComputeRootKeyFromShards(shards)[:])
		if got != sub.RootKey || got != sv.RootKey {
			return fmt.Errorf("subset %v: SDK combined to a different key", sub.IDs)
		}
		if err := circlRecoverReversed(sv, sub, values); err != nil {
			return err
		}
	}
	return nil
}

// circlRecoverReversed recombines a subset with circl's secretsharing.Recover
// directly, feeding the shares in reverse order (order must not matter).
func circlRecoverReversed(sv ShamirVector, sub Subset, values map[uint64]*[32]byte) error {
	g := group.P256
	shares := make([]secretsharing.Share, 0, len(sub.IDs))
	for i := len(sub.IDs) - 1; i >= 0; i-- {
		s := secretsharing.Share{ID: g.NewScalar(), Value: g.NewScalar()}
		s.ID.SetUint64(sub.IDs[i])
		if err := s.Value.UnmarshalBinary(values[sub.IDs[i]][:]); err != nil {
			return fmt.Errorf("subset %v: circl rejects share %d: %v", sub.IDs, sub.IDs[i], err)
		}
		shares = append(shares, s)
	}
	secret, err := secretsharing.Recover(uint(sv.Threshold-1), shares)
	if err != nil {
		return fmt.Errorf("subset %v: circl recover: %v", sub.IDs, err)
	}
	raw, err := secret.MarshalBinary()
	if err != nil {
		return err
	}
	if hex.EncodeToString(raw) != sv.RootKey {
		return fmt.Errorf("subset %v (reversed): circl combined to a different key", sub.IDs)
	}
	return nil
}

func ids(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}
