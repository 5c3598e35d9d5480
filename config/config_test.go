package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const full = `
wal:     {dir: /var/lib/walship, sync: local, segment_size: 16MiB, compression: zstd}
source:
  postgres: {dsn: "${PG_DSN}", slot: s1, publication: p1, tables: [public.accounts, "sales.orders"]}
  http:     {listen: "127.0.0.1:${HTTP_PORT:-7070}"}
archive: {url: file:///srv/archive, timeout: 1s}
kafka:   {brokers: ["127.0.0.1:9092"], topic_prefix: shop, mode: tables}
replica: {url: sqlite:///tmp/r.db}
http:    {listen: 127.0.0.1:7071}
`

func TestParseFull(t *testing.T) {
	c, err := Parse([]byte(full), env(map[string]string{"PG_DSN": "postgres://u:pw@db/app"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.WAL.SegmentSize != 16<<20 || c.WAL.Compression != "zstd" || c.WAL.RetentionPolicy != "keep" {
		t.Errorf("wal = %+v", c.WAL)
	}
	if c.Source.Postgres.DSN != "postgres://u:pw@db/app" || len(c.Source.Postgres.Tables) != 2 || c.Source.Postgres.Snapshot != "initial" {
		t.Errorf("postgres = %+v", c.Source.Postgres)
	}
	if c.Source.HTTP.Listen != "127.0.0.1:7070" || c.Source.HTTP.MaxBody != DefaultMaxBody {
		t.Errorf("http source = %+v", c.Source.HTTP)
	}
	if c.Archive.Timeout != time.Second || c.Archive.SnapshotKeep != DefaultSnapshotKeep {
		t.Errorf("archive = %+v", c.Archive)
	}
	if c.Kafka.Mode != "tables" || c.Kafka.Compression != "zstd" || c.Kafka.TopicPrefix != "shop" {
		t.Errorf("kafka = %+v", c.Kafka)
	}
	if c.Log.Format != "auto" || c.Lag.Window != DefaultLagWindow || c.Lag.Warn.P99 != 500*time.Millisecond || c.Lag.Critical.P999 != 20*time.Second {
		t.Errorf("log/lag = %+v %+v", c.Log, c.Lag)
	}
}

// TestErrors checks that every bad input names its key (and line) and says
// what is wrong.
func TestErrors(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"unknown key", "wal:\n  dir: /w\n  segmnt_size: 1MiB\n", `wal.segmnt_size (line 3): unknown key; did you mean "segment_size"?`},
		{"unknown section", "wal: {dir: /w}\nkafak: {}\n", `kafak (line 2): unknown key; did you mean "kafka"?`},
		{"bad sync word", "wal: {dir: /w, sync: always}\n", `wal.sync (line 1): "always" is not one of local, off, shipped`},
		{"shipped without sinks", "wal: {dir: /w, sync: shipped}\n", `wal.sync (line 1): shipped needs a sink to ship to: configure kafka and/or archive`},
		{"shipped sink not configured", "wal:\n  dir: /w\n  sync: shipped\n  shipped_sinks: [kafka, archive]\nkafka: {brokers: [b:1]}\n", `wal.shipped_sinks[1] (line 4): archive is not configured`},
		{"shipped sink unknown", "wal:\n  dir: /w\n  shipped_sinks: [s3]\narchive: {url: \"file:///a\"}\n", `wal.shipped_sinks[0] (line 3): "s3" is not one of kafka, archive`},
		{"shipped sinks empty", "wal:\n  dir: /w\n  shipped_sinks: []\narchive: {url: \"file:///a\"}\n", `wal.shipped_sinks (line 3): empty`},
		{"bad sync", "wal: {dir: /w, sync: remote_apply}\n", `wal.sync (line 1): "remote_apply" is not one of local, off, shipped, applied`},
		{"applied without quorum", "wal: {dir: /w, sync: applied}\nkafka: {brokers: [b:1]}\n", `wal.sync (line 1): applied needs wal.applied_quorum`},
		{"bad quorum", "wal:\n  dir: /w\n  applied_quorum: \"FIRST 3 (a, b)\"\nkafka: {brokers: [b:1]}\n", `wal.applied_quorum (line 3): wal: bad quorum "FIRST 3 (a, b)": 3 of 2 replicas`},
		{"quorum syntax", "wal:\n  dir: /w\n  applied_quorum: \"ANY 1 (a b)\"\nkafka: {brokers: [b:1]}\n", `wal.applied_quorum (line 3): wal: bad quorum "ANY 1 (a b)": want ',' or ')'`},
		{"quorum without kafka", "wal: {dir: /w, applied_quorum: \"ANY 1 (a)\"}\n", `wal.applied_quorum (line 1): replicas report what they applied through Kafka`},
		{"consumer name", "wal: {dir: /w}\nconsumer: {name: \"a\\tb\"}\n", `consumer.name (line 2)`},
		{"ha without kafka or archive", "wal: {dir: /w}\nha: {name: a}\n", `ha (line 2): the group's lease and its shared log live in Kafka (mode ordered) or, without Kafka, in the archive`},
		{"ha name", "wal: {dir: /w}\nkafka: {brokers: [b:1]}\nha: {name: \"a b\"}\n", `ha.name (line 3): "a b": want 1 to 64 of`},
		{"ha name missing", "wal: {dir: /w}\nkafka: {brokers: [b:1]}\nha: {lease: 2s}\n", `ha.name (line 3): "": want 1 to 64 of`},
		{"ha lease", "wal: {dir: /w}\nkafka: {brokers: [b:1]}\nha: {name: a, lease: 100ms}\n", `ha.lease (line 3): 100ms: want 1s to 5m0s`},
		{"kafka format", "wal: {dir: /w}\nkafka: {brokers: [b:1], format: avro}\n", `kafka.format (line 2): "avro" is not one of json, json-schemas`},
		{"ha tables", "wal: {dir: /w}\nkafka: {brokers: [b:1], mode: tables}\nha: {name: a}\n", `kafka.mode (line 2): "tables": ha needs mode ordered`},
		{"negative sync timeout", "wal: {dir: /w}\nsource:\n  http: {sync_timeout: -1s}\n", `source.http.sync_timeout (line 3)`},
		{"bad size", "wal:\n  dir: /w\n  segment_size: lots\n", `wal.segment_size (line 3)`},
		{"bad duration", "wal: {dir: /w}\narchive:\n  url: file:///a\n  timeout: soon\n", `archive.timeout (line 4)`},
		{"unset env", "wal: {dir: /w}\nsource:\n  postgres: {dsn: \"${NOPE}\"}\n", `source.postgres.dsn (line 3): environment variable NOPE is not set`},
		{"malformed env", "wal: {dir: \"${A\"}\n", `wal.dir (line 1): malformed environment reference`},
		{"list wanted", "wal: {dir: /w}\nkafka: {brokers: b:1}\n", `kafka.brokers (line 2): want a list`},
		{"mapping wanted", "wal: /w\n", `wal (line 1): want a mapping`},
		{"non-loopback without token", "wal: {dir: /w}\nsource:\n  http: {listen: \"0.0.0.0:7070\"}\n", `source.http.token (line 3): listening on 0.0.0.0:7070 (not loopback) requires a bearer token`},
		{"short token", "wal: {dir: /w}\nhttp: {token: abc12}\n", `http.token (line 2): too short (5 characters), want at least 16`},
		{"tiny idempotency window", "wal: {dir: /w}\nsource:\n  http: {idempotency_window: 1ns}\n", `source.http.idempotency_window (line 3): 1ns is below the minimum of 1m0s`},
		{"negative max connections", "wal: {dir: /w}\nsource:\n  http: {max_connections: -1}\n", `source.http.max_connections (line 3): must not be negative`},
		{"short source token", "wal: {dir: /w}\nsource:\n  http: {listen: \"0.0.0.0:7070\", token: abc12}\n", `source.http.token (line 3): too short (5 characters)`},
		{"partitions negative", "wal: {dir: /w}\nkafka: {brokers: [b:1], mode: tables, partitions: -2}\n", `kafka.partitions (line 2): -2: want 1 to 10000`},
		{"partitions in ordered mode", "wal: {dir: /w}\nkafka:\n  brokers: [b:1]\n  partitions: 4\n", `kafka.partitions (line 4): 4: only for mode: tables`},
		{"bad archive url", "wal: {dir: /w}\narchive: {url: \"ftp://x\"}\n", `archive.url (line 2): "ftp://x": want file:///abs/dir`},
		{"relative file archive", "wal: {dir: /w}\narchive: {url: \"file://rel/dir\"}\n", `needs an absolute path`},
		{"bad table", "wal: {dir: /w}\nsource:\n  postgres: {dsn: x, tables: [\"a.b.c\"]}\n", `source.postgres.tables[0]`},
		{"bad broker", "wal: {dir: /w}\nkafka: {brokers: [nohost]}\n", `kafka.brokers[0] (line 2): "nohost" is not host:port`},
		{"broker password redacted", "wal: {dir: /w}\nkafka: {brokers: [\"kuser:hunter2@127.0.0.1:2\"]}\n", `kafka.brokers[0] (line 2): "kuser:REDACTED@127.0.0.1:2" is not host:port (credentials go in kafka.sasl)`},
		{"broker user refused", "wal: {dir: /w}\nkafka: {brokers: [\"hunter2@127.0.0.1:2\"]}\n", `kafka.brokers[0] (line 2): "REDACTED@127.0.0.1:2" is not host:port`},
		{"listener password redacted", "wal: {dir: /w}\nhttp: {listen: \"u:hunter2@127.0.0.1:2\"}\n", `http.listen (line 2): "u:REDACTED@127.0.0.1:2" is not host:port`},
		{"password redacted", "wal: {dir: /w}\nreplica: {url: \"mysql://u:hunter2@h/db\"}\n", `replica.url (line 2): "mysql://u:REDACTED@h/db"`},
		{"keyword/value password redacted", "wal: {dir: /w}\nreplica: {url: \"host=h password = hunter2\"}\n", `replica.url (line 2): "host=h password = REDACTED"`},
		{"malformed URL password redacted", "wal: {dir: /w}\nreplica: {url: \"mysql://u:hun%zz@ter2@h/db\"}\n", `replica.url (line 2): "mysql://u:REDACTED@h/db"`},
		{"section indented", "wal: {dir: /w}\nsource:\n  http: {}\n  archive: {url: \"file:///a\"}\n", `source.archive (line 4): unknown key; archive is a top-level section: unindent it`},
		{"tab", "wal:\n\tdir: /w\n", `YAML does not allow tabs for indentation`},
		{"duplicate", "wal: {dir: /w}\nwal: {dir: /x}\n", `wal (line 2): key given twice`},
		{"not a mapping", "- a\n- b\n", `line 1: the configuration must be a mapping`},
		{"syntax", "wal: {dir: /w\n", `did not find expected`},
		{"empty", "", `empty configuration`},
		{"negative commit time skew", "wal: {dir: /w, max_commit_time_skew: -1m}\n", `wal.max_commit_time_skew (line 1)`},
		{"small max bytes", "wal: {dir: /w, segment_size: 8MiB, max_bytes: 10MiB}\n", `wal.max_bytes (line 1): 10MiB is less than two segments`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), env(nil))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error leaks a password: %v", err)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *config.Error", err)
			}
		})
	}
}

func TestForRunAndConsume(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		consume bool
		want    string
	}{
		{"wal: {sync: off}\nsource: {http: {}}\n", false, "wal.dir: required by walship run"},
		{"wal: {dir: /w}\n", false, "source: walship run needs a source"},
		{"replica: {url: \"sqlite:///r.db\"}\n", true, "kafka: walship consume reads Kafka"},
		{"kafka: {brokers: [\"h:1\"]}\n", true, "replica: walship consume needs replica.url"},
		{"wal: {dir: /w}\nsource: {http: {}}\n", false, ""},
		{"kafka: {brokers: [\"h:1\"]}\nreplica: {url: \"sqlite:///r.db\"}\n", true, ""},
	} {
		c, err := Parse([]byte(tc.yaml), env(nil))
		if err != nil {
			t.Fatal(err)
		}
		if tc.consume {
			err = c.ForConsume()
		} else {
			err = c.ForRun()
		}
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	y := "wal: {dir: \"/w/${SUB}\", segment_size: \"${SZ}\"}\nhttp: {listen: \"127.0.0.1:${PORT:-9000}\", token: \"$$literal-token-x\"}\n"
	c, err := Parse([]byte(y), env(map[string]string{"SUB": "a b", "SZ": "2MiB"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.WAL.Dir != "/w/a b" || c.WAL.SegmentSize != 2<<20 || c.HTTP.Listen != "127.0.0.1:9000" || c.HTTP.Token != "$literal-token-x" {
		t.Fatalf("got %+v %+v", c.WAL, c.HTTP)
	}
	// A value from the environment cannot inject structure.
	c, err = Parse([]byte("wal: {dir: \"${D}\"}\n"), env(map[string]string{"D": "/x}\nkafka: {brokers: [a:1]"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka != nil || !strings.Contains(c.WAL.Dir, "kafka") {
		t.Fatalf("env value changed the structure: %+v", c)
	}
}

func TestLoadRelativeDirAndFileInErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "walship.yaml")
	os.WriteFile(p, []byte("wal: {dir: data}\n"), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.WAL.Dir != filepath.Join(dir, "data") {
		t.Fatalf("wal.dir = %q", c.WAL.Dir)
	}
	os.WriteFile(p, []byte("wal: {dir: data, sync: maybe}\n"), 0o644)
	if _, err := Load(p); err == nil || !strings.HasPrefix(err.Error(), p+": wal.sync (line 1)") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("err = %v", err)
	}
}

// TestDocsNameEveryKey keeps docs/CONFIG.md complete: every key the code
// accepts appears there in backquotes, and every `a.b` key the docs name
// exists.
func TestDocsNameEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var collect func(prefix string, typ reflect.Type)
	collect = func(prefix string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		for name, ft := range yamlFields(typ) {
			key := join(prefix, name)
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != typeOfDuration && ft != typeOfByteSize {
				collect(key, ft)
				continue
			}
			keys = append(keys, key)
		}
	}
	collect("", typeOfConfig)
	known := map[string]bool{}
	for _, k := range keys {
		known[k] = true
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/CONFIG.md does not describe `%s`", k)
		}
	}
	for _, m := range regexp.MustCompile("`((?:wal|source|archive|kafka|replica|http|log|lag)\\.[a-z0-9_.]+)`").FindAllStringSubmatch(string(doc), -1) {
		if !known[m[1]] {
			t.Errorf("docs/CONFIG.md names `%s`, which the code does not accept", m[1])
		}
	}
}

// TestShippedSinksDefault: wal.shipped_sinks defaults to every configured
// sink, and wal.sync takes shipped when one is.
func TestShippedSinksDefault(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{"wal: {dir: /w, sync: shipped}\nkafka: {brokers: [b:1]}\narchive: {url: \"file:///a\"}\n", []string{"kafka", "archive"}},
		{"wal: {dir: /w, sync: shipped}\narchive: {url: \"file:///a\"}\n", []string{"archive"}},
		{"wal: {dir: /w, sync: shipped, shipped_sinks: [archive]}\nkafka: {brokers: [b:1]}\narchive: {url: \"file:///a\"}\n", []string{"archive"}},
		{"wal: {dir: /w}\n", nil},
	} {
		c, err := Parse([]byte(tc.yaml), env(nil))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if !slices.Equal(c.WAL.ShippedSinks, tc.want) {
			t.Errorf("%q: shipped_sinks %v, want %v", tc.yaml, c.WAL.ShippedSinks, tc.want)
		}
	}
}

// TestIdempotencyWindowZeroIsDefault: source.http.idempotency_window 0 (or
// absent) means the documented default; 1m, the minimum, is kept.
func TestIdempotencyWindowZeroIsDefault(t *testing.T) {
	for yaml, want := range map[string]time.Duration{
		"{idempotency_window: 0s}": DefaultIdempotencyWindow,
		"{}":                       DefaultIdempotencyWindow,
		"{idempotency_window: 1m}": time.Minute,
	} {
		c, err := Parse([]byte("wal: {dir: /w}\nsource:\n  http: "+yaml+"\n"), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatalf("%s: %v", yaml, err)
		}
		if got := c.Source.HTTP.IdempotencyWindow; got != want {
			t.Errorf("%s: window %v, want %v", yaml, got, want)
		}
	}
}
