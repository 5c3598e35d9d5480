package main

// Shared helpers of the command-line tests: the walship binary (built once
// in TestMain and run with os/exec), NDJSON input generation, and parsers
// for the acknowledgement and dump output and for the on-disk format
// described in segment/doc.go.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

// walshipBin is the path of the walship binary built by TestMain.
var walshipBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "walship-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	walshipBin = filepath.Join(dir, "walship")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: go tool not found:", err)
		return 1
	}
	// The binary is built without -race on purpose: the tests exercise its
	// behaviour, and a race build would make them far slower.
	build := exec.Command(goTool, "build", "-o", walshipBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: building walship:", err)
		return 1
	}
	// walreplay beside it, as scripts/demo.sh builds it: the demo's
	// closing hints name it (TestDemo runs them).
	build = exec.Command(goTool, "build", "-o", filepath.Join(dir, "walreplay"), "../walreplay")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: building walreplay:", err)
		return 1
	}
	return m.Run()
}

// result is the outcome of one walship invocation.
type result struct {
	stdout, stderr string
	code           int // exit code; -1 if killed by a signal
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, clip(r.stdout), clip(r.stderr))
}

func clip(s string) string {
	if len(s) > 4000 {
		return s[:2000] + "\n...\n" + s[len(s)-2000:]
	}
	return s
}

// walship runs the binary with args and stdin (nil for none) and waits for
// it, failing the test if it cannot be started or runs over a minute. It
// must be called from the test's goroutine; see runWalship.
func walship(t testing.TB, stdin []byte, args ...string) result {
	t.Helper()
	res, err := runWalship(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// runWalship is walship for any goroutine: it returns an error instead.
func runWalship(stdin []byte, args ...string) (result, error) {
	cmd := exec.Command(walshipBin, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return result{}, fmt.Errorf("starting walship %s: %v", strings.Join(args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		return result{}, fmt.Errorf("walship %s: still running after a minute", strings.Join(args, " "))
	}
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		return result{}, fmt.Errorf("walship %s: %v", strings.Join(args, " "), err)
	}
	return res, nil
}

// mustWalship is walship that requires exit code 0.
func mustWalship(t testing.TB, stdin []byte, args ...string) result {
	t.Helper()
	r := walship(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("walship %s: %v", strings.Join(args, " "), r)
	}
	return r
}

// ack is one acknowledgement line of `walship append`.
type ack struct {
	LSN        uint64
	CommitTime time.Time
	raw        string
}

// parseAck parses one acknowledgement line strictly: exactly the keys lsn
// (a number) and commit_time (RFC 3339 with nanoseconds), in that order.
func parseAck(line string) (ack, error) {
	const prefix, mid, suffix = `{"lsn":`, `,"commit_time":"`, `"}`
	rest, ok := strings.CutPrefix(line, prefix)
	if !ok {
		return ack{}, fmt.Errorf("ack %q: does not begin with %s", line, prefix)
	}
	num, ts, ok := strings.Cut(rest, mid)
	if !ok {
		return ack{}, fmt.Errorf("ack %q: no commit_time", line)
	}
	ts, ok = strings.CutSuffix(ts, suffix)
	if !ok {
		return ack{}, fmt.Errorf("ack %q: does not end with %s", line, suffix)
	}
	lsn, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return ack{}, fmt.Errorf("ack %q: lsn: %v", line, err)
	}
	tm, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ack{}, fmt.Errorf("ack %q: commit_time: %v", line, err)
	}
	// It must also be plain valid JSON with just these two keys.
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil || len(m) != 2 {
		return ack{}, fmt.Errorf("ack %q: not a JSON object of two keys (%v)", line, err)
	}
	return ack{LSN: lsn, CommitTime: tm, raw: line}, nil
}

// parseAcks parses the whole stdout of `walship append`.
func parseAcks(t testing.TB, stdout string) []ack {
	t.Helper()
	var acks []ack
	for _, l := range lines(stdout) {
		a, err := parseAck(l)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, a)
	}
	return acks
}

// lines splits NDJSON output into lines, requiring a final newline.
func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// parseDump parses the whole stdout of `walship dump`.
func parseDump(t testing.TB, stdout string) []change.DumpLine {
	t.Helper()
	if stdout != "" && !strings.HasSuffix(stdout, "\n") {
		t.Fatalf("dump output does not end in a newline: ...%q", stdout[max(0, len(stdout)-200):])
	}
	var out []change.DumpLine
	for i, l := range lines(stdout) {
		d, err := change.ParseDumpLine([]byte(l))
		if err != nil {
			t.Fatalf("dump line %d %q: %v", i+1, l, err)
		}
		out = append(out, d)
	}
	return out
}

// parseTxns parses generated input lines with the reference parser.
func parseTxns(t testing.TB, in []string) []change.Txn {
	t.Helper()
	txns := make([]change.Txn, len(in))
	for i, l := range in {
		txn, err := change.ParseTxnLine([]byte(l))
		if err != nil {
			t.Fatalf("generated line %d is invalid: %v\n%s", i+1, err, l)
		}
		txns[i] = txn
	}
	return txns
}

func ndjson(in []string) []byte {
	if len(in) == 0 {
		return []byte{}
	}
	return []byte(strings.Join(in, "\n") + "\n")
}

// checkAcks checks the acknowledgements of txns appended to a log whose
// next LSN was first: one per transaction, each the LSN of the
// transaction's last change (dense), commit times never decreasing.
func checkAcks(t testing.TB, acks []ack, txns []change.Txn, first uint64, prevTime time.Time) {
	t.Helper()
	if len(acks) != len(txns) {
		t.Fatalf("got %d acknowledgements, want %d", len(acks), len(txns))
	}
	next := first
	for i, a := range acks {
		want := next + uint64(len(txns[i].Changes)) - 1
		if a.LSN != want {
			t.Fatalf("ack %d %q: lsn %d, want %d (%d changes from LSN %d)", i+1, a.raw, a.LSN, want, len(txns[i].Changes), next)
		}
		if a.CommitTime.Before(prevTime) {
			t.Fatalf("ack %d %q: commit time goes back from %s", i+1, a.raw, prevTime.Format(time.RFC3339Nano))
		}
		if ct := txns[i].Header.SourceCommitTime; !ct.IsZero() && a.CommitTime.Before(ct) {
			t.Fatalf("ack %d %q: commit time before the source commit time %s", i+1, a.raw, ct.Format(time.RFC3339Nano))
		}
		prevTime = a.CommitTime
		next = want + 1
	}
}

// checkDump checks that dump holds exactly txns, acknowledged by acks, in
// order, with dense LSNs from first.
func checkDump(t testing.TB, dump []change.DumpLine, txns []change.Txn, acks []ack, first uint64) {
	t.Helper()
	n := 0
	for _, txn := range txns {
		n += len(txn.Changes)
	}
	if len(dump) != n {
		t.Fatalf("dump has %d changes, want %d", len(dump), n)
	}
	i := 0
	for k, txn := range txns {
		for j := range txn.Changes {
			d := dump[i]
			if want := first + uint64(i); d.LSN != want {
				t.Fatalf("dump line %d: lsn %d, want %d", i+1, d.LSN, want)
			}
			if d.CommitLSN != acks[k].LSN {
				t.Fatalf("dump line %d (txn %d): commit_lsn %d, want the acknowledged %d", i+1, k+1, d.CommitLSN, acks[k].LSN)
			}
			if !d.CommitTime.Equal(acks[k].CommitTime) {
				t.Fatalf("dump line %d (txn %d): commit_time %s, want the acknowledged %s", i+1, k+1,
					d.CommitTime.Format(time.RFC3339Nano), acks[k].CommitTime.Format(time.RFC3339Nano))
			}
			if !d.Header.Equal(txn.Header) {
				t.Fatalf("dump line %d (txn %d): header %+v, want %+v", i+1, k+1, d.Header, txn.Header)
			}
			if !d.Change.Equal(&txn.Changes[j]) {
				t.Fatalf("dump line %d (txn %d change %d) differs from the input:\n got %s\nwant %s", i+1, k+1, j,
					change.AppendDumpJSON(nil, d), change.AppendDumpJSON(nil, change.DumpLine{LSN: d.LSN,
						CommitLSN: d.CommitLSN, CommitTime: d.CommitTime, Header: txn.Header, Change: &txn.Changes[j]}))
			}
			i++
		}
	}
}

// --- input generation ---

var tables = []string{
	"public.accounts", "accounts", "public.t", "other.orders", "audit.Events",
	`"my schema"."T.x"`, "ünï.cödé", `"we""ird"."ta ble"`, "s_1.$tbl",
}

var colNames = []string{
	"id", "v", "name", "amount", "payload", "tags", "created_at", "my col", "ключ", "列", "a.b", `q"uote`, "x$1",
}

var texts = []string{
	"", "x", "hello, world", "héllo wörld", "日本語テキスト", "emoji 🎉🚀👩‍👩‍👧", "tab\tnew\nline\rcr",
	`quote " backslash \ slash /`, "\u0001\u001f control", "line sep \u2028 para \u2029", "<html>&amp;</html>",
	"12345678901234567890", "-0", "null", "true", `{"$type":"bytes"}`, "ﬃ ǅ Ω ß", strings.Repeat("long ", 60),
}

// gen generates random valid `walship append` input lines.
type gen struct {
	r *rand.Rand
}

func newGen(seed uint64) *gen { return &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))} }

func (g *gen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (g *gen) digits(n int) string {
	var b strings.Builder
	b.WriteByte(byte('1' + g.r.IntN(9)))
	for range n - 1 {
		b.WriteByte(byte('0' + g.r.IntN(10)))
	}
	return b.String()
}

func (g *gen) timestamp() string {
	t := time.Unix(g.r.Int64N(4102444800), g.r.Int64N(1e9))
	zones := []*time.Location{time.UTC, time.FixedZone("", 5*3600+1800), time.FixedZone("", -8*3600)}
	return t.In(zones[g.r.IntN(len(zones))]).Format(time.RFC3339Nano)
}

// commitTime returns a random past commit time (walship append refuses one
// beyond --max-commit-time-skew ahead of the clock), in various zones.
func (g *gen) commitTime() string {
	t := time.Unix(g.r.Int64N(1700000000), g.r.Int64N(1e9)) // before November 2023
	zones := []*time.Location{time.UTC, time.FixedZone("", 5*3600+1800), time.FixedZone("", -8*3600)}
	return t.In(zones[g.r.IntN(len(zones))]).Format(time.RFC3339Nano)
}

// value returns a random JSON column value in the input mapping.
func (g *gen) value(depth int) string {
	r := g.r
	for {
		switch r.IntN(22) {
		case 0:
			return "null"
		case 1:
			return strconv.FormatBool(r.IntN(2) == 0)
		case 2:
			return strconv.FormatInt(r.Int64N(2000)-1000, 10)
		case 3:
			return g.pick([]string{"9223372036854775807", "-9223372036854775808", "0", strconv.FormatInt(int64(r.Uint64()), 10)})
		case 4: // numbers beyond int64: kept as numeric text exactly
			s := g.digits(19 + r.IntN(50))
			if r.IntN(2) == 0 {
				s = "-" + s
			}
			if r.IntN(2) == 0 {
				s += "." + g.digits(1+r.IntN(30)) + "0"
			}
			return s
		case 5:
			return g.pick([]string{"1.5", "-0.000123e-45", "2E+10", "1e400", "3.14159265358979323846264338327950288419716939937510", "0.0", "-0"})
		case 6:
			return quote(g.pick(texts))
		case 7:
			b := make([]byte, r.IntN(40))
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			return `{"$type":"bytes","value":"` + base64.StdEncoding.EncodeToString(b) + `"}`
		case 8:
			return `{"$type":"timestamp","value":"` + g.timestamp() + `"}`
		case 9:
			return `{"$type":"float","value":` + g.pick([]string{"1.5", `"NaN"`, `"Infinity"`, `"-Infinity"`, "-0", "6.02214076e23", "1e-300"}) + `}`
		case 10:
			return `{"$type":"numeric","value":` + g.pick([]string{`"123"`, `"12.30"`, `"NaN"`, `"-Infinity"`, "42", `"` + g.digits(40) + `"`}) + `}`
		case 11:
			return `{"$type":"int","value":` + g.pick([]string{`"42"`, "-7", `"-9223372036854775808"`}) + `}`
		case 12:
			return `{"$type":"unknown","type":` + quote(g.pick([]string{"tsvector", "point", "my type"})) + `,"value":` + quote(g.pick(texts)) + `}`
		case 13:
			return `{"$type":"json","value":` + g.pick([]string{`[1,2,{"a":null}]`, `"str"`, `12.5`, `{"$type":"x","value":1}`, `null`, `true`, `{ "spaced" : [ 1 , 2 ] }`}) + `}`
		case 14:
			if depth > 3 {
				continue
			}
			n := r.IntN(4)
			elems := make([]string, n)
			for i := range elems {
				elems[i] = g.value(depth + 1)
			}
			return "[" + strings.Join(elems, ",") + "]"
		case 15:
			return g.pick([]string{`{"a":{"b":[1,2,{"c":null}]},"d":"e"}`, `{ "k" : "v" , "n" : [ 1 , 2.50 ] }`, `{}`,
				`{"ü":"ß","emoji":"🎉","esc":"a\"b\\c\u0001"}`, `{"nested":{"$type":"not at top"}}`})
		case 16:
			if depth > 3 {
				continue
			}
			return `{"$type":"array","value":[` + g.value(depth+1) + `,` + g.value(depth+1) + `]}`
		case 17:
			return `{"$type":"null"}`
		case 18:
			return `{"$type":"text","value":` + quote(g.pick(texts)) + `}`
		case 19:
			return `{"$type":"bool","value":false}`
		case 20:
			return `[[1,[2,[3,["deep"]]]],[],null]`
		case 21:
			return quote(g.digits(25)) // a numeric-looking string stays text
		}
	}
}

// row returns a random row object with an "id" column first (so rows are
// easy to identify), or with no columns at all, rarely.
func (g *gen) row(id uint64) string {
	if g.r.IntN(50) == 0 {
		return "{}"
	}
	cols := []string{`"id":` + strconv.FormatUint(id, 10)}
	names := slices.Clone(colNames[1:])
	g.r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	for _, n := range names[:g.r.IntN(6)] {
		cols = append(cols, quote(n)+":"+g.value(0))
	}
	return "{" + strings.Join(cols, ",") + "}"
}

var ops = []string{"c", "u", "d", "t", "r", "m"}

// change returns the fields of one random change (without braces).
func (g *gen) change(id uint64) []string {
	r := g.r
	op := g.pick(ops)
	f := []string{}
	if op != "m" || r.IntN(2) == 0 {
		f = append(f, `"table":`+quote(g.pick(tables)))
	}
	f = append(f, `"op":"`+op+`"`)
	key := `{"id":` + strconv.FormatUint(id, 10) + `}`
	switch op {
	case "c", "r":
		if r.IntN(2) == 0 {
			f = append(f, `"key":`+key)
		}
		if r.IntN(4) == 0 {
			f = append(f, `"before":null`)
		}
		f = append(f, `"after":`+g.row(id))
	case "u":
		switch r.IntN(3) {
		case 0:
			f = append(f, `"key":`+key)
		case 1:
			f = append(f, `"before":`+g.row(id))
		default:
			f = append(f, `"key":`+key, `"before":`+g.row(id))
		}
		f = append(f, `"after":`+g.row(id))
	case "d":
		switch r.IntN(3) {
		case 0:
			f = append(f, `"key":`+key)
		case 1:
			f = append(f, `"before":`+g.row(id))
		default:
			f = append(f, `"key":`+key, `"before":`+g.row(id))
		}
	case "t":
		if r.IntN(3) == 0 {
			f = append(f, `"key":null`, `"after":null`)
		}
	case "m":
		content := quote(g.pick(texts))
		if r.IntN(2) == 0 {
			b := make([]byte, 1+r.IntN(20))
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			content = `{"$type":"bytes","value":"` + base64.StdEncoding.EncodeToString(b) + `"}`
		}
		f = append(f, `"message":{"prefix":`+quote(g.pick([]string{"app", "", "wal.ship/ü"}))+`,"content":`+content+
			`,"transactional":`+strconv.FormatBool(r.IntN(2) == 0)+`}`)
	}
	if op != "m" && op != "t" && r.IntN(4) == 0 {
		f = append(f, `"types":{"id":"int8","v":"text","my col":"character varying(20)"}`)
	}
	g.r.Shuffle(len(f), func(i, j int) { f[i], f[j] = f[j], f[i] })
	return f
}

// header returns optional transaction header fields.
func (g *gen) header() []string {
	r := g.r
	var f []string
	if r.IntN(2) == 0 {
		f = append(f, `"xid":`+strconv.FormatUint(r.Uint64N(1<<40), 10))
	}
	if r.IntN(3) == 0 {
		f = append(f, fmt.Sprintf(`"source_lsn":"%X/%X"`, r.Uint32(), r.Uint32()))
	}
	if r.IntN(4) == 0 {
		f = append(f, `"commit_time":"`+g.commitTime()+`"`)
	}
	if r.IntN(5) == 0 {
		f = append(f, `"origin":`+quote(g.pick([]string{"app", "pg-primary", "ünïcode 🎉"})))
	}
	return f
}

// txn returns one random transaction line with 1 to 5 changes; ids of its
// rows start at id.
func (g *gen) txn(id uint64) string {
	n := 1 + g.r.IntN(5)
	hdr := g.header()
	if n == 1 && g.r.IntN(2) == 0 {
		f := append(g.change(id), hdr...)
		g.r.Shuffle(len(f), func(i, j int) { f[i], f[j] = f[j], f[i] })
		return "{" + strings.Join(f, ",") + "}"
	}
	cs := make([]string, n)
	for i := range cs {
		cs[i] = "{" + strings.Join(g.change(id+uint64(i)), ",") + "}"
	}
	f := append([]string{`"changes":[` + strings.Join(cs, ",") + `]`}, hdr...)
	g.r.Shuffle(len(f), func(i, j int) { f[i], f[j] = f[j], f[i] })
	return "{" + strings.Join(f, ",") + "}"
}

func (g *gen) txns(n int, id uint64) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = g.txn(id)
		id += 10
	}
	return out
}

// seed returns a random seed and logs it, so that a failure can be
// reproduced by setting WALSHIP_TEST_SEED.
func seed(t testing.TB) uint64 {
	t.Helper()
	s := rand.Uint64()
	if env := os.Getenv("WALSHIP_TEST_SEED"); env != "" {
		var err error
		if s, err = strconv.ParseUint(env, 10, 64); err != nil {
			t.Fatalf("WALSHIP_TEST_SEED: %v", err)
		}
	}
	t.Logf("seed %d (set WALSHIP_TEST_SEED to repeat)", s)
	return s
}

// --- on-disk format (segment/doc.go) ---

const (
	segHeaderSize   = 64
	frameHeaderSize = 48
)

// frame is a frame header found in a segment file.
type frame struct {
	off        int64 // offset of the frame header
	stored     int64 // stored payload length
	firstLSN   uint64
	txnStart   uint64
	count      uint32
	writeOff   uint32
	codec      byte
	commit     bool
	end        int64 // offset after the payload and its padding
	payloadOff int64
}

// segFile is a segment file of a log directory.
type segFile struct {
	name   string
	path   string
	base   uint64
	frames []frame
}

// readSegments lists the segment files of dir in LSN order and parses
// their frame headers up to the first zero header or the end of the file.
// It does not check checksums.
func readSegments(t testing.TB, dir string) []segFile {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []segFile
	for _, e := range ents {
		name := e.Name()
		if len(name) != 20 || !strings.HasSuffix(name, ".seg") {
			continue
		}
		base, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 16, 64)
		if err != nil {
			continue
		}
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < segHeaderSize || string(b[:8]) != "WALSHIP\x00" {
			t.Fatalf("%s: no segment header", name)
		}
		if got := binary.LittleEndian.Uint64(b[16:]); got != base {
			t.Fatalf("%s: header base LSN %d", name, got)
		}
		s := segFile{name: name, path: p, base: base}
		for off := int64(segHeaderSize); off+frameHeaderSize <= int64(len(b)); {
			h := b[off : off+frameHeaderSize]
			if bytes.Count(h, []byte{0}) == frameHeaderSize {
				break
			}
			stored := int64(binary.LittleEndian.Uint32(h[8:]))
			f := frame{off: off, stored: stored, firstLSN: binary.LittleEndian.Uint64(h[16:]),
				txnStart: binary.LittleEndian.Uint64(h[24:]), count: binary.LittleEndian.Uint32(h[32:]),
				writeOff: binary.LittleEndian.Uint32(h[36:]), codec: h[44], commit: h[45]&1 != 0,
				payloadOff: off + frameHeaderSize, end: off + frameHeaderSize + (stored+7)&^7}
			s.frames = append(s.frames, f)
			off = f.end
		}
		segs = append(segs, s)
	}
	slices.SortFunc(segs, func(a, b segFile) int { return cmpU64(a.base, b.base) })
	return segs
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// flipByte inverts the bits of the byte at off in file p.
func flipByte(t testing.TB, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// scanLines calls fn for every line read from r until EOF.
func scanLines(r *bufio.Reader, fn func(string)) error {
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		fn(strings.TrimSuffix(l, "\n"))
	}
}
