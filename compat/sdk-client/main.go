// Command sdk-client drives SPIKE Nexus through the Go SDK (spike-sdk-go) and checks every
// answer. It is the Go half of the compatibility test: the Rust end-to-end test
// (crates/spike-pilot/tests/e2e) runs it against our Nexus.
//
// The SDK reads SPIFFE_ENDPOINT_SOCKET, SPIKE_NEXUS_API_URL and SPIKE_TRUST_ROOT_* from the
// environment and uses the first SVID the Workload API returns, so each invocation runs with
// a Workload API that serves exactly the identity the subcommand needs.
//
// Usage:
//
//	sdk-client secrets  [path]    superuser: put, get, list, metadata, delete, undelete
//	sdk-client policies [name]    superuser: create, list, get, delete
//	sdk-client cipher             superuser: stream encrypt/decrypt, JSON decrypt
//	sdk-client recover  <dir>     recover role: writes <dir>/spike.recovery.<id>.txt
//	sdk-client restore  <file>... restore role: submits each shard file, prints the status
//	sdk-client not-ready          superuser: a sealed Nexus must refuse a secret read
//
// Every successful check prints "ok <check>" on standard output. The first mismatch prints
// "FAIL <check>: <detail>" on standard error and exits with status 1; a usage error exits 2.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/spike-sdk-go/api"
	"github.com/spiffe/spike-sdk-go/api/entity/data"
	sdkErrors "github.com/spiffe/spike-sdk-go/errors"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	client, err := api.New()
	if err != nil {
		fail("connect", "cannot get an SVID from the Workload API: %v", err)
	}
	defer client.Close()

	args := os.Args[2:]
	switch os.Args[1] {
	case "secrets":
		secrets(ctx, client, argOr(args, "compat/sdk/db"))
	case "policies":
		policies(ctx, client, argOr(args, "compat-sdk-policy"))
	case "cipher":
		cipher(ctx, client)
	case "recover":
		if len(args) != 1 {
			usage()
		}
		recoverShards(ctx, client, args[0])
	case "restore":
		if len(args) == 0 {
			usage()
		}
		restore(ctx, client, args)
	case "not-ready":
		notReady(ctx, client)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr,
		"usage: sdk-client secrets [path] | policies [name] | cipher | recover <dir> | "+
			"restore <file>... | not-ready")
	os.Exit(2)
}

func argOr(args []string, def string) string {
	if len(args) > 0 {
		return args[0]
	}
	return def
}

func ok(check string) {
	fmt.Printf("ok %s\n", check)
}

func fail(check, format string, a ...any) {
	fmt.Fprintf(os.Stderr, "FAIL %s: %s\n", check, fmt.Sprintf(format, a...))
	os.Exit(1)
}

// must fails the check when the SDK returned an error.
func must(check string, err *sdkErrors.SDKError) {
	if err != nil {
		fail(check, "SDK error: %v", err)
	}
}

func expectSecret(ctx context.Context, c *api.API, check, path string, version int,
	want map[string]string) {
	got, err := c.GetSecretVersion(ctx, path, version)
	must(check, err)
	if got == nil || !reflect.DeepEqual(got.Data, want) {
		fail(check, "got %v, want %v", got, want)
	}
	ok(check)
}

func expectNotFound(ctx context.Context, c *api.API, check, path string) {
	got, err := c.GetSecret(ctx, path)
	if err == nil {
		fail(check, "expected not found, got %v", got)
	}
	if !err.Is(sdkErrors.ErrAPINotFound) {
		fail(check, "expected %s, got %v", sdkErrors.ErrAPINotFound.Code, err)
	}
	ok(check)
}

func secrets(ctx context.Context, c *api.API, path string) {
	v1 := map[string]string{"user": "u1", "pass": "p1"}
	v2 := map[string]string{"user": "u2"}

	must("secret put v1", c.PutSecret(ctx, path, v1))
	ok("secret put v1")
	must("secret put v2", c.PutSecret(ctx, path, v2))
	ok("secret put v2")

	expectSecret(ctx, c, "secret get current", path, 0, v2)
	expectSecret(ctx, c, "secret get version 1", path, 1, v1)

	keys, err := c.ListSecretKeys(ctx)
	must("secret list", err)
	if keys == nil || !slices.Contains(*keys, path) {
		fail("secret list", "%q not in %v", path, keys)
	}
	ok("secret list")

	meta, err := c.GetSecretMetadata(ctx, path, 0)
	must("secret metadata", err)
	if meta.Metadata.CurrentVersion != 2 || meta.Metadata.OldestVersion != 1 {
		fail("secret metadata", "current %d oldest %d, want 2 and 1",
			meta.Metadata.CurrentVersion, meta.Metadata.OldestVersion)
	}
	if len(meta.Versions) != 2 {
		fail("secret metadata", "versions %v, want 1 and 2", meta.Versions)
	}
	for n, v := range meta.Versions {
		if v.Version != n || v.DeletedTime != nil || v.CreatedTime.IsZero() {
			fail("secret metadata", "version %d: %+v", n, v)
		}
	}
	if meta.Metadata.CreatedTime.IsZero() || meta.Metadata.UpdatedTime.IsZero() {
		fail("secret metadata", "zero times: %+v", meta.Metadata)
	}
	ok("secret metadata")

	// Deleting the current version makes version 1 current (SPIKE's soft delete).
	must("secret delete current", c.DeleteSecret(ctx, path))
	expectSecret(ctx, c, "secret delete current", path, 0, v1)
	meta, err = c.GetSecretMetadata(ctx, path, 1)
	must("secret metadata after delete", err)
	if meta.Versions[2].DeletedTime == nil || meta.Versions[1].DeletedTime != nil {
		fail("secret metadata after delete", "versions %+v", meta.Versions)
	}
	ok("secret metadata after delete")

	must("secret undelete", c.UndeleteSecret(ctx, path, []int{2}))
	expectSecret(ctx, c, "secret undelete", path, 0, v2)

	must("secret delete all versions", c.DeleteSecretVersions(ctx, path, []int{1, 2}))
	expectNotFound(ctx, c, "secret delete all versions", path)

	must("secret undelete all", c.UndeleteSecret(ctx, path, []int{1, 2}))
	expectSecret(ctx, c, "secret undelete all", path, 0, v2)

	expectNotFound(ctx, c, "secret get missing", path+"/missing")
}

func policies(ctx context.Context, c *api.API, name string) {
	const idPattern = "^spiffe://spike.test/app/.*$"
	const pathPattern = "^compat/app/.*$"
	perms := []data.PolicyPermission{data.PermissionRead, data.PermissionList}

	must("policy create", c.CreatePolicy(ctx, name, idPattern, pathPattern, perms))
	ok("policy create")

	listed := func(check string, items *[]data.PolicyListItem) bool {
		if items == nil {
			fail(check, "nil list")
		}
		for _, p := range *items {
			if p.Name == name {
				return true
			}
		}
		return false
	}

	all, err := c.ListAllPolicies(ctx)
	must("policy list", err)
	if !listed("policy list", all) {
		fail("policy list", "%q not in %+v", name, *all)
	}
	ok("policy list")

	byID, err := c.ListPolicies(ctx, idPattern, "")
	must("policy list by spiffeid pattern", err)
	if !listed("policy list by spiffeid pattern", byID) {
		fail("policy list by spiffeid pattern", "%q not in %+v", name, *byID)
	}
	ok("policy list by spiffeid pattern")

	none, err := c.ListPolicies(ctx, "", "^nothing/matches$")
	must("policy list by path pattern", err)
	if listed("policy list by path pattern", none) {
		fail("policy list by path pattern", "%q listed under another path pattern", name)
	}
	ok("policy list by path pattern")

	p, err := c.GetPolicy(ctx, name)
	must("policy get", err)
	if p.Name != name || p.SPIFFEIDPattern != idPattern || p.PathPattern != pathPattern ||
		!reflect.DeepEqual(p.Permissions, perms) || p.CreatedAt.IsZero() {
		fail("policy get", "got %+v", p)
	}
	ok("policy get")

	must("policy delete", c.DeletePolicy(ctx, name))
	ok("policy delete")

	_, err = c.GetPolicy(ctx, name)
	if err == nil {
		fail("policy get after delete", "the deleted policy still reads")
	}
	// SPIKE's Go Nexus answers 500 here (docs/compatibility.md); the SDK reports any failure as an error.
	ok(fmt.Sprintf("policy get after delete (%s)", err.Code))

	all, err = c.ListAllPolicies(ctx)
	must("policy list after delete", err)
	if listed("policy list after delete", all) {
		fail("policy list after delete", "%q still listed", name)
	}
	ok("policy list after delete")
}

func cipher(ctx context.Context, c *api.API) {
	plain := []byte("compat \x00\x01\xff binary payload\n")

	ct, err := c.CipherEncryptStream(ctx, bytes.NewReader(plain))
	must("cipher encrypt stream", err)
	// version byte, 12-byte nonce, ciphertext with a 16-byte tag
	if len(ct) != 1+12+len(plain)+16 || ct[0] != 1 {
		fail("cipher encrypt stream", "unexpected ciphertext layout (%d bytes, version %d)",
			len(ct), ct[0])
	}
	ok("cipher encrypt stream")

	pt, err := c.CipherDecryptStream(ctx, bytes.NewReader(ct))
	must("cipher decrypt stream", err)
	if !bytes.Equal(pt, plain) {
		fail("cipher decrypt stream", "got %q, want %q", pt, plain)
	}
	ok("cipher decrypt stream")

	pt, err = c.CipherDecrypt(ctx, ct[0], ct[1:13], ct[13:], "")
	must("cipher decrypt json", err)
	if !bytes.Equal(pt, plain) {
		fail("cipher decrypt json", "got %q, want %q", pt, plain)
	}
	ok("cipher decrypt json")

	jct, err := c.CipherEncrypt(ctx, plain, "")
	must("cipher encrypt json", err)
	if len(jct) != len(plain)+16 {
		fail("cipher encrypt json", "ciphertext is %d bytes, want %d", len(jct), len(plain)+16)
	}
	ok("cipher encrypt json")
}

func recoverShards(ctx context.Context, c *api.API, dir string) {
	shards, err := c.Recover(ctx)
	must("operator recover", err)
	if len(shards) == 0 {
		fail("operator recover", "no shards")
	}
	if mkErr := os.MkdirAll(dir, 0o700); mkErr != nil {
		fail("operator recover", "%v", mkErr)
	}
	for id, shard := range shards {
		if shard == nil || *shard == [32]byte{} {
			fail("operator recover", "shard %d is empty", id)
		}
		text := fmt.Sprintf("spike:%d:%s", id, hex.EncodeToString(shard[:]))
		file := filepath.Join(dir, fmt.Sprintf("spike.recovery.%d.txt", id))
		if wErr := os.WriteFile(file, []byte(text), 0o600); wErr != nil {
			fail("operator recover", "%v", wErr)
		}
	}
	ok(fmt.Sprintf("operator recover %d", len(shards)))
}

func parseShard(text string) (int, *[32]byte, error) {
	parts := strings.Split(strings.TrimSpace(text), ":")
	if len(parts) != 3 || parts[0] != "spike" {
		return 0, nil, fmt.Errorf("not spike:<id>:<hex>")
	}
	id, err := strconv.Atoi(parts[1])
	if err != nil {
		return 0, nil, fmt.Errorf("bad id: %w", err)
	}
	raw, err := hex.DecodeString(parts[2])
	if err != nil || len(raw) != 32 {
		return 0, nil, fmt.Errorf("bad shard value")
	}
	var shard [32]byte
	copy(shard[:], raw)
	return id, &shard, nil
}

func restore(ctx context.Context, c *api.API, files []string) {
	for _, file := range files {
		text, rErr := os.ReadFile(file)
		if rErr != nil {
			fail("operator restore", "%v", rErr)
		}
		id, shard, pErr := parseShard(string(text))
		if pErr != nil {
			fail("operator restore", "%s: %v", file, pErr)
		}
		status, err := c.Restore(ctx, id, shard)
		must("operator restore", err)
		fmt.Printf("ok operator restore collected=%d remaining=%d restored=%t\n",
			status.ShardsCollected, status.ShardsRemaining, status.Restored)
	}
}

func notReady(ctx context.Context, c *api.API) {
	got, err := c.GetSecret(ctx, "compat/sealed")
	if err == nil {
		fail("not ready", "a sealed Nexus answered %v", got)
	}
	if !err.Is(sdkErrors.ErrStateNotReady) {
		fail("not ready", "expected %s, got %v", sdkErrors.ErrStateNotReady.Code, err)
	}
	ok("not ready")
}
