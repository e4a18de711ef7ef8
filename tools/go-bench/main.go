// Command go-bench is a neutral load generator for a SPIKE Nexus (ours or SPIKE's Go Nexus).
//
// It takes its X.509-SVID from the Workload API (SPIFFE_ENDPOINT_SOCKET), authorizes the
// server by SPIFFE ID, and drives the secrets API (POST /v1/store/secrets) with the standard
// net/http client. See README.md for the workloads and the JSON report.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const secretsPath = "/v1/store/secrets"

type options struct {
	url         string
	serverID    string
	workload    string
	connections int
	duration    time.Duration
	noKeepalive bool
	secrets     uint64
	valueSize   int
	serverPID   int
	noPopulate  bool
	jsonOut     bool
}

// latency mirrors spike-bench's latency summary (microseconds, nearest rank).
type latency struct {
	Count  uint64  `json:"count"`
	MeanUs float64 `json:"mean_us"`
	P50Us  uint64  `json:"p50_us"`
	P90Us  uint64  `json:"p90_us"`
	P99Us  uint64  `json:"p99_us"`
	P999Us uint64  `json:"p999_us"`
	MaxUs  uint64  `json:"max_us"`
}

// report uses spike-bench's field names where they overlap.
type report struct {
	Client                string   `json:"client"`
	Workload              string   `json:"workload"`
	Connections           int      `json:"connections"`
	Keepalive             bool     `json:"keepalive"`
	Secrets               uint64   `json:"secrets"`
	ValueSize             int      `json:"value_size"`
	ElapsedSecs           float64  `json:"elapsed_secs"`
	Requests              uint64   `json:"requests"`
	Errors                uint64   `json:"errors"`
	FirstError            *string  `json:"first_error"`
	ThroughputRPS         float64  `json:"throughput_rps"`
	Latency               latency  `json:"latency"`
	ServerRSSKiB          *uint64  `json:"server_rss_kib"`
	RSSAnonKiB            *uint64  `json:"rss_anon_kib"`
	RSSFileKiB            *uint64  `json:"rss_file_kib"`
	RSSNote               *string  `json:"rss_note"`
	ServerCPUMs           *float64 `json:"server_cpu_ms"`
	ServerCPUUsPerRequest *float64 `json:"server_cpu_us_per_request"`
	PopulateSecs          *float64 `json:"populate_secs"`
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "", "Nexus base URL, e.g. https://127.0.0.1:8553 (required)")
	flag.StringVar(&o.serverID, "server-id", "spiffe://spike.ist/spike/nexus", "SPIFFE ID the server must present")
	flag.StringVar(&o.workload, "workload", "get", "get | put-fresh | put-versions | mix (90 % get, 10 % put-versions)")
	flag.IntVar(&o.connections, "connections", 16, "concurrent workers, one connection each with keep-alive")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "run time")
	flag.BoolVar(&o.noKeepalive, "no-keepalive", false, "a new TCP + TLS connection per request")
	flag.Uint64Var(&o.secrets, "secrets", 100, "secrets bench/secret-<i> addressed by get, put-versions and mix")
	flag.IntVar(&o.valueSize, "value-size", 64, "bytes per secret value")
	flag.IntVar(&o.serverPID, "server-pid", 0, "Nexus pid: report its CPU time per request and RSS")
	flag.BoolVar(&o.noPopulate, "no-populate", false, "do not write the secrets first (they exist)")
	flag.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "go-bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.url == "" {
		return errors.New("--url is required")
	}
	switch o.workload {
	case "get", "put-fresh", "put-versions", "mix":
	default:
		return fmt.Errorf("unknown workload %q", o.workload)
	}
	id, err := spiffeid.FromString(o.serverID)
	if err != nil {
		return fmt.Errorf("--server-id: %w", err)
	}
	o.connections = max(o.connections, 1)
	o.secrets = max(o.secrets, 1)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	defer source.Close()
	tlsConf := tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(id))

	rep := report{
		Client: "go-bench", Workload: o.workload, Connections: o.connections,
		Keepalive: !o.noKeepalive, Secrets: o.secrets, ValueSize: o.valueSize,
	}
	if !o.noPopulate && o.workload != "put-fresh" {
		t0 := time.Now()
		if err := populate(ctx, o, tlsConf); err != nil {
			return fmt.Errorf("populate: %w", err)
		}
		s := time.Since(t0).Seconds()
		rep.PopulateSecs = &s
	}

	var cpu0 uint64
	if o.serverPID > 0 {
		if cpu0, err = cpuTicks(o.serverPID); err != nil {
			return err
		}
	}
	samples, errs, firstErr, elapsed := load(ctx, o, tlsConf)
	if o.serverPID > 0 {
		cpu1, err := cpuTicks(o.serverPID)
		if err != nil {
			return err
		}
		ms := float64(cpu1-cpu0) * 1000 / clockTicks
		perReq := ms * 1000 / float64(max(len(samples), 1))
		rep.ServerCPUMs, rep.ServerCPUUsPerRequest = &ms, &perReq
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", o.serverPID))
		if err == nil {
			rep.ServerRSSKiB = statusField(st, "VmRSS:")
			rep.RSSAnonKiB = statusField(st, "RssAnon:")
			rep.RSSFileKiB = statusField(st, "RssFile:")
			note := fmt.Sprintf("VmRSS of pid %d", o.serverPID)
			rep.RSSNote = &note
		}
	}
	rep.ElapsedSecs = elapsed.Seconds()
	rep.Latency = summarize(samples)
	rep.Requests = rep.Latency.Count
	rep.Errors = errs
	rep.FirstError = firstErr
	if elapsed > 0 {
		rep.ThroughputRPS = float64(rep.Requests) / elapsed.Seconds()
	}
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printHuman(rep)
	return nil
}

// newClient is one worker's client: one pooled connection, or none without keep-alive.
func newClient(tlsConf *tls.Config, keepalive bool) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     tlsConf,
			DisableKeepAlives:   !keepalive,
			MaxIdleConnsPerHost: 1,
			ForceAttemptHTTP2:   false,
		},
	}
}

type secretPut struct {
	Path   string            `json:"path"`
	Values map[string]string `json:"values"`
}

type secretGet struct {
	Path    string `json:"path"`
	Version int64  `json:"version"`
}

// call POSTs body as JSON and fails on a non-200 status or a non-empty "err" field.
func call(ctx context.Context, c *http.Client, base, action string, body any) error {
	buf, err := json.Marshal(body)
	if err != nil {
		return err
	}
	u := base + secretsPath
	if action != "" {
		u += "?action=" + action
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(buf))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", u, resp.StatusCode, truncate(raw))
	}
	var r struct {
		Err string `json:"err"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("%s: decoding response: %w", u, err)
	}
	if r.Err != "" {
		return fmt.Errorf("%s: err %q", u, r.Err)
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.TrimSpace(string(b))
}

func secretPath(i uint64) string { return "bench/secret-" + strconv.FormatUint(i, 10) }

// valueOf is a deterministic printable value of size bytes.
func valueOf(size int, seed uint64) map[string]string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return map[string]string{"value": string(b)}
}

func populate(ctx context.Context, o options, tlsConf *tls.Config) error {
	workers := uint64(min(o.connections, 64))
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(tlsConf, true)
			for i := w; i < o.secrets; i += workers {
				if err := call(ctx, c, o.url, "", secretPut{secretPath(i), valueOf(o.valueSize, i)}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// load runs the workload until the deadline; it returns the latencies of the successful
// requests (microseconds), the error count, the first error and the wall time.
func load(ctx context.Context, o options, tlsConf *tls.Config) ([]uint64, uint64, *string, time.Duration) {
	var errs atomic.Uint64
	var firstErr atomic.Pointer[string]
	// put-fresh paths are unique to this run: never written before.
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	value := valueOf(o.valueSize, 1)
	start := time.Now()
	deadline := start.Add(o.duration)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(30*time.Second))
	defer cancel()
	results := make([][]uint64, o.connections)
	var wg sync.WaitGroup
	for w := range o.connections {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(tlsConf, !o.noKeepalive)
			r := rand.New(rand.NewPCG(uint64(w)+1, uint64(start.UnixNano())))
			samples := make([]uint64, 0, 4096)
			var n uint64
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := r.Uint64N(o.secrets)
				var body any = secretGet{Path: secretPath(i)}
				action := "get"
				switch {
				case o.workload == "put-fresh":
					n++
					body, action = secretPut{fmt.Sprintf("bench/fresh-%s-%d-%d", nonce, w, n), value}, ""
				case o.workload == "put-versions", o.workload == "mix" && r.IntN(10) == 0:
					body, action = secretPut{secretPath(i), valueOf(o.valueSize, i)}, ""
				}
				t0 := time.Now()
				err := call(ctx, c, o.url, action, body)
				us := uint64(time.Since(t0).Microseconds())
				if err != nil {
					errs.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
					continue
				}
				samples = append(samples, us)
			}
			c.CloseIdleConnections()
			results[w] = samples
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []uint64
	for _, s := range results {
		all = append(all, s...)
	}
	return all, errs.Load(), firstErr.Load(), elapsed
}

// percentile is the nearest-rank p-th percentile of sorted (ascending), as spike-bench's.
func percentile(sorted []uint64, p float64) uint64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The epsilon keeps 99.9 % of 1000 at rank 999 despite binary floating point.
	rank := min(max(int(math.Ceil(p*float64(n)/100-1e-9)), 1), n)
	return sorted[rank-1]
}

func summarize(s []uint64) latency {
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	l := latency{Count: uint64(len(s))}
	if len(s) == 0 {
		return l
	}
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	l.MeanUs = sum / float64(len(s))
	l.P50Us, l.P90Us = percentile(s, 50), percentile(s, 90)
	l.P99Us, l.P999Us = percentile(s, 99), percentile(s, 99.9)
	l.MaxUs = s[len(s)-1]
	return l
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTicks = 100

// cpuTicks is utime + stime of pid in clock ticks.
func cpuTicks(pid int) (uint64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from after its ')'.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return utime + stime, nil
}

// statusField is the kB value of field (e.g. "VmRSS:") in a /proc/<pid>/status text.
func statusField(status []byte, field string) *uint64 {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				if v, err := strconv.ParseUint(f[0], 10, 64); err == nil {
					return &v
				}
			}
		}
	}
	return nil
}

func printHuman(r report) {
	l := r.Latency
	fmt.Printf("workload %s | connections %d | keepalive %t | secrets %d | value %d B\n",
		r.Workload, r.Connections, r.Keepalive, r.Secrets, r.ValueSize)
	fmt.Printf("requests %d in %.2fs, errors %d\nthroughput %.0f req/s\n",
		r.Requests, r.ElapsedSecs, r.Errors, r.ThroughputRPS)
	fmt.Printf("latency  p50 %d us  p90 %d us  p99 %d us  p99.9 %d us  max %d us  mean %.0f us\n",
		l.P50Us, l.P90Us, l.P99Us, l.P999Us, l.MaxUs, l.MeanUs)
	if r.ServerCPUUsPerRequest != nil {
		fmt.Printf("server CPU %.0f us per request\n", *r.ServerCPUUsPerRequest)
	}
	if r.ServerRSSKiB != nil {
		fmt.Printf("server RSS %d KiB", *r.ServerRSSKiB)
		if r.RSSAnonKiB != nil && r.RSSFileKiB != nil {
			fmt.Printf(" (anon %d, file %d)", *r.RSSAnonKiB, *r.RSSFileKiB)
		}
		fmt.Println()
	}
	if r.FirstError != nil {
		fmt.Printf("first error: %s\n", *r.FirstError)
	}
}
