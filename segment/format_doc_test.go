package segment

import (
	"bytes"
	"encoding/binary"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The tests in this file keep the byte layout described in
// docs/FORMAT.md (for operators and implementers of other readers) and in
// the package doc in step with layout.go and with what the encoders
// write: they parse the docs' layout tables and figures, encode a header
// with a distinct value in every field, and check each documented field's
// offset, size and meaning against both. Changing the layout on one side
// only fails here.

// docField is one row of a layout table: offset, size ("n" for the
// payload: -1) and the field's description.
type docField struct {
	off, size int
	text      string
}

// docSection returns the part of the Markdown document md from the line
// starting with heading up to the next heading of the same or a higher
// level.
func docSection(t *testing.T, md, heading string) string {
	t.Helper()
	i := strings.Index(md, "\n"+heading)
	if i < 0 {
		t.Fatalf("docs/FORMAT.md has no section %q", heading)
	}
	s := md[i+1:]
	level := strings.Index(heading, " ") // number of '#'
	for j := 1; j < len(s); {
		k := strings.Index(s[j:], "\n#")
		if k < 0 {
			break
		}
		j += k + 1
		if n := len(s[j:]) - len(strings.TrimLeft(s[j:], "#")); n <= level {
			return s[:j]
		}
	}
	return s
}

var markdownRow = regexp.MustCompile(`(?m)^\|\s*(\d+)\s*\|\s*(\d+|n)\s*\|\s*(.*?)\s*\|\s*$`)

// markdownTable returns the rows of the first off/size/field table in s.
func markdownTable(t *testing.T, s string) []docField {
	t.Helper()
	i := strings.Index(s, "| off | size | field |")
	if i < 0 {
		t.Fatalf("no off/size/field table in:\n%s", s)
	}
	s = s[i:]
	if end := strings.Index(s, "\n\n"); end >= 0 {
		s = s[:end]
	}
	var rows []docField
	for _, m := range markdownRow.FindAllStringSubmatch(s, -1) {
		rows = append(rows, newDocField(t, m[1], m[2], m[3]))
	}
	return rows
}

var (
	goDocRow  = regexp.MustCompile(`^\s*(\d+)\s+(\d+|n)\s+(.*)$`)
	goDocCont = regexp.MustCompile(`^\s{6,}(\S.*)$`)
)

// goDocTable returns the rows of the first "off size field" figure after
// heading in the package doc (doc.go): a row per field, continuation
// lines indented further.
func goDocTable(t *testing.T, doc, heading string) []docField {
	t.Helper()
	i := strings.Index(doc, heading)
	if i < 0 {
		t.Fatalf("doc.go has no %q", heading)
	}
	j := strings.Index(doc[i:], "off size field")
	if j < 0 {
		t.Fatalf("doc.go has no off/size/field figure after %q", heading)
	}
	var rows []docField
	for _, line := range strings.Split(doc[i+j:], "\n")[1:] {
		line, ok := strings.CutPrefix(line, "//\t")
		if !ok {
			break
		}
		if m := goDocRow.FindStringSubmatch(line); m != nil {
			rows = append(rows, newDocField(t, m[1], m[2], m[3]))
		} else if m := goDocCont.FindStringSubmatch(line); m != nil && len(rows) > 0 {
			rows[len(rows)-1].text += " " + m[1]
		} else {
			break
		}
	}
	return rows
}

func newDocField(t *testing.T, off, size, text string) docField {
	t.Helper()
	f := docField{size: -1, text: text}
	var err error
	if f.off, err = strconv.Atoi(off); err != nil {
		t.Fatal(err)
	}
	if size != "n" {
		if f.size, err = strconv.Atoi(size); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// layoutField is what the code says about one field: the description's
// first words in the docs, its offset in layout.go, and a check of the
// field's documented description and encoded bytes.
type layoutField struct {
	name  string
	off   int
	check func(t *testing.T, text string, b []byte)
}

// checkLayout checks a documented table against the code's fields: the
// same fields in the same order, each at the code's offset, each ending
// where the next begins (the last at end; -1: a field of size n), and
// each field's bytes in enc (read at the documented offset and size) as
// its check expects.
func checkLayout(t *testing.T, where string, rows []docField, fields []layoutField, end int, enc []byte) {
	t.Helper()
	if len(rows) != len(fields) {
		t.Errorf("%s: %d fields documented, the code has %d", where, len(rows), len(fields))
	}
	for i, f := range fields {
		if i >= len(rows) {
			t.Errorf("%s: field %q at offset %d is not documented", where, f.name, f.off)
			continue
		}
		r := rows[i]
		if !strings.HasPrefix(r.text, f.name) {
			t.Errorf("%s: row %d is %q, the code has %q there", where, i, r.text, f.name)
			continue
		}
		size := end - f.off
		if i+1 < len(fields) {
			size = fields[i+1].off - f.off
		}
		if end < 0 && i+1 == len(fields) {
			size = -1
		}
		if r.off != f.off || r.size != size {
			t.Errorf("%s: %q documented at offset %d size %d, the code has offset %d size %d", where, f.name, r.off, r.size, f.off, size)
			continue
		}
		if f.check != nil && r.size >= 0 {
			if r.off+r.size > len(enc) {
				t.Errorf("%s: %q ends past the encoded %d bytes", where, f.name, len(enc))
				continue
			}
			f.check(t, r.text, enc[r.off:r.off+r.size])
		} else if f.check != nil {
			f.check(t, r.text, nil)
		}
	}
}

// docNumber returns the single integer n the pattern (with one group)
// finds in s.
func docNumber(t *testing.T, s, pattern string) int {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(s)
	if m == nil {
		if len(s) > 80 {
			s = s[:80] + "…"
		}
		t.Errorf("%q does not match %s", s, pattern)
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func wantUint(t *testing.T, name string, b []byte, want uint64) {
	t.Helper()
	var got uint64
	switch len(b) {
	case 1:
		got = uint64(b[0])
	case 2:
		got = uint64(binary.LittleEndian.Uint16(b))
	case 4:
		got = uint64(binary.LittleEndian.Uint32(b))
	case 8:
		got = binary.LittleEndian.Uint64(b)
	default:
		t.Errorf("%s: documented size %d is not an integer's", name, len(b))
		return
	}
	if got != want {
		t.Errorf("%s: the encoder wrote %#x at the documented place, want %#x", name, got, want)
	}
}

func wantZero(t *testing.T, name string, b []byte) {
	t.Helper()
	if !allZero(b) {
		t.Errorf("%s: the encoder wrote % x, want zeros", name, b)
	}
}

// crcRange checks a "CRC-32C of ... bytes A..B" description against the
// range the code covers, and the checksum bytes against that range of enc.
func crcRange(t *testing.T, name, text string, enc, sum []byte, from, to int) {
	t.Helper()
	m := regexp.MustCompile(`(\d+)\.\.(\d+)`).FindStringSubmatch(text)
	if m == nil {
		t.Errorf("%s: %q names no byte range", name, text)
		return
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	if a != from || b != to {
		t.Errorf("%s: documented over bytes %d..%d, the code covers %d..%d", name, a, b, from, to)
		return
	}
	wantUint(t, name, sum, uint64(crc(enc[a:b+1])))
}

// sampleHeader has a distinct value in every field.
func sampleHeader() segmentHeader {
	h := segmentHeader{lineage: 0x0a0b0c0d, base: 0x1122334455667788}
	for i := range h.id {
		h.id[i], h.logID[i] = byte(0x30+i), byte(0x60+i)
	}
	return h
}

// headerFields is the segment header as the code lays it out.
func headerFields(h segmentHeader, enc []byte) []layoutField {
	return []layoutField{
		{"magic", hdrMagicOff, func(t *testing.T, text string, b []byte) {
			m := regexp.MustCompile("`([^`]*)`|(\"[^\"]*\")").FindStringSubmatch(text)
			var magic string
			switch {
			case m == nil:
				t.Errorf("magic: %q quotes no value", text)
			case m[1] != "":
				magic = strings.ReplaceAll(m[1], `\0`, "\x00")
			default:
				magic, _ = strconv.Unquote(m[2])
			}
			if magic != segmentMagic || string(b) != segmentMagic {
				t.Errorf("magic: documented %q, the code has %q and wrote %q", magic, segmentMagic, b)
			}
		}},
		{"format version", hdrVersionOff, func(t *testing.T, text string, b []byte) {
			if v := docNumber(t, text, `version\D*(\d+)`); v != FormatVersion {
				t.Errorf("format version: documented %d, the code writes %d", v, FormatVersion)
			}
			wantUint(t, "format version", b, FormatVersion)
		}},
		{"header size", hdrSizeOff, func(t *testing.T, text string, b []byte) {
			if n := docNumber(t, text, `size\D*(\d+)`); n != HeaderSize {
				t.Errorf("header size: documented %d, HeaderSize is %d", n, HeaderSize)
			}
			wantUint(t, "header size", b, HeaderSize)
		}},
		{"lineage", hdrLineageOff, func(t *testing.T, _ string, b []byte) { wantUint(t, "lineage", b, uint64(h.lineage)) }},
		{"base LSN", hdrBaseOff, func(t *testing.T, _ string, b []byte) { wantUint(t, "base LSN", b, h.base) }},
		{"segment id", hdrIDOff, func(t *testing.T, _ string, b []byte) {
			if !bytes.Equal(b, h.id[:]) {
				t.Errorf("segment id: the encoder wrote % x there, want % x", b, h.id)
			}
		}},
		{"log id", hdrLogIDOff, func(t *testing.T, _ string, b []byte) {
			if !bytes.Equal(b, h.logID[:]) {
				t.Errorf("log id: the encoder wrote % x there, want % x", b, h.logID)
			}
		}},
		{"reserved", hdrReservedOff, func(t *testing.T, _ string, b []byte) { wantZero(t, "reserved", b) }},
		{"CRC-32C", hdrCRCOff, func(t *testing.T, text string, b []byte) {
			crcRange(t, "header checksum", text, enc, b, 0, hdrCRCOff-1)
		}},
	}
}

// sampleFrame has a distinct value in every field.
func sampleFrame() frameHeader {
	return frameHeader{
		payloadCRC: 0x01020304, storedLen: 0x0506, rawLen: 0x0708, firstLSN: 0x1112131415161718,
		txnStart: 0x0102030405060708, count: 0x2122, writeOffset: 0x31323334, salt: 0x41424344,
		codec: CodecZstd, flags: flagEndsTxn | flagAbort,
	}
}

// frameFields is the frame header and payload as the code lays them out.
func frameFields(h frameHeader, enc []byte) []layoutField {
	u := func(name string, v uint64) func(*testing.T, string, []byte) {
		return func(t *testing.T, _ string, b []byte) { wantUint(t, name, b, v) }
	}
	return []layoutField{
		{"CRC-32C of header bytes", frHeaderCRCOff, func(t *testing.T, text string, b []byte) {
			crcRange(t, "frame header checksum", text, enc, b, frPayloadCRCOff, FrameHeaderSize-1)
		}},
		{"CRC-32C of the stored payload", frPayloadCRCOff, u("payload checksum", uint64(h.payloadCRC))},
		{"stored payload length", frStoredLenOff, u("stored payload length", uint64(h.storedLen))},
		{"raw payload length", frRawLenOff, func(t *testing.T, text string, b []byte) {
			wantUint(t, "raw payload length", b, uint64(h.rawLen))
			if m := regexp.MustCompile(`(\d+) MiB`).FindStringSubmatch(text); m != nil {
				if n, _ := strconv.Atoi(m[1]); n<<20 != MaxFramePayload {
					t.Errorf("raw payload length: documented at most %d MiB, MaxFramePayload is %d", n, MaxFramePayload)
				}
			}
		}},
		{"first LSN", frFirstLSNOff, u("first LSN", h.firstLSN)},
		{"txn start", frTxnStartOff, u("txn start", h.txnStart)},
		{"record count", frCountOff, u("record count", uint64(h.count))},
		{"write offset", frWriteOffsetOff, u("write offset", uint64(h.writeOffset))},
		{"salt", frSaltOff, func(t *testing.T, text string, b []byte) {
			wantUint(t, "salt", b, uint64(h.salt))
			if n := docNumber(t, text, `first (\d+) bytes of the segment id`); n != len(b) {
				t.Errorf("salt: documented as %d bytes of the segment id, is %d", n, len(b))
			}
			var sh segmentHeader
			copy(sh.id[:], "\x01\x02\x03\x04\x05")
			if sh.salt() != 0x04030201 {
				t.Errorf("salt: segmentHeader.salt() = %#x, want the id's first 4 bytes", sh.salt())
			}
		}},
		{"codec", frCodecOff, func(t *testing.T, text string, b []byte) {
			wantUint(t, "codec", b, uint64(h.codec))
			ms := regexp.MustCompile(`(\d+) (none|[a-z][a-z0-9]*)\b`).FindAllStringSubmatch(text, -1)
			for i, m := range ms {
				n, _ := strconv.Atoi(m[1])
				if n != i || Codec(n).String() != m[2] {
					t.Errorf("codec: documented %s = %q, the code has Codec(%d) = %q", m[1], m[2], n, Codec(n))
				}
			}
			if len(ms) != int(CodecZstd)+1 {
				t.Errorf("codec: %d codecs documented, the code has %d", len(ms), CodecZstd+1)
			}
		}},
		{"flags", frFlagsOff, func(t *testing.T, text string, b []byte) {
			wantUint(t, "flags", b, uint64(h.flags))
			documented := 0
			for _, m := range regexp.MustCompile(`bit (\d+) = ([^;]*)`).FindAllStringSubmatch(text, -1) {
				n, _ := strconv.Atoi(m[1])
				documented |= 1 << n
				var want int
				switch {
				case strings.Contains(m[2], "commit"):
					want = flagEndsTxn
				case strings.Contains(m[2], "aborted range"):
					want = flagAbortedRange
				case strings.Contains(m[2], "abort"):
					want = flagAbort
				}
				if 1<<n != want {
					t.Errorf("flags: bit %d documented as %q, which the code has at %#x", n, m[2], want)
				}
			}
			if documented != knownFlags {
				t.Errorf("flags: documented bits %#x, the code knows %#x", documented, knownFlags)
			}
		}},
		{"reserved", frReservedOff, func(t *testing.T, _ string, b []byte) { wantZero(t, "reserved", b) }},
		{"stored payload", FrameHeaderSize, func(t *testing.T, text string, _ []byte) {
			if n := docNumber(t, text, `padding to a multiple of (\d+)`); n != frameAlign {
				t.Errorf("padding: documented to a multiple of %d, frameAlign is %d", n, frameAlign)
			}
		}},
	}
}

func readFormatDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFormatDocSegmentHeader: docs/FORMAT.md §2 and the package doc
// describe the header encode writes and layout.go lays out.
func TestFormatDocSegmentHeader(t *testing.T) {
	h := sampleHeader()
	enc := h.encode()
	sec := docSection(t, readFormatDoc(t), "## 2. Segment header")
	if n := docNumber(t, sec, `^## 2\. Segment header \((\d+) bytes at offset 0\)`); n != HeaderSize {
		t.Errorf("docs/FORMAT.md §2: header of %d bytes, HeaderSize is %d", n, HeaderSize)
	}
	checkLayout(t, "docs/FORMAT.md §2", markdownTable(t, sec), headerFields(h, enc), HeaderSize, enc)
	checkLayout(t, "doc.go segment header", goDocTable(t, readPackageDoc(t), "# Segment header"), headerFields(h, enc), HeaderSize, enc)
	if got, reason := decodeSegmentHeader(enc); reason != "" || got != h {
		t.Errorf("the sample header does not decode: %q", reason)
	}
}

// TestFormatDocFrames: docs/FORMAT.md §3 and the package doc describe the
// frame header encode writes and layout.go lays out.
func TestFormatDocFrames(t *testing.T) {
	h := sampleFrame()
	enc := make([]byte, FrameHeaderSize)
	h.encode(enc)
	sec := docSection(t, readFormatDoc(t), "## 3. Frames")
	if n := docNumber(t, sec, `frame\s+header of (\d+) zero bytes`); n != FrameHeaderSize {
		t.Errorf("docs/FORMAT.md §3: frame header of %d bytes, FrameHeaderSize is %d", n, FrameHeaderSize)
	}
	if n := docNumber(t, sec, `starting at a multiple of (\d+)`); n != frameAlign {
		t.Errorf("docs/FORMAT.md §3: frames start at a multiple of %d, frameAlign is %d", n, frameAlign)
	}
	checkLayout(t, "docs/FORMAT.md §3", markdownTable(t, sec), frameFields(h, enc), -1, enc)
	checkLayout(t, "doc.go frames", goDocTable(t, readPackageDoc(t), "# Frames"), frameFields(h, enc), -1, enc)
}

// TestFormatDocDirectory: the file names of docs/FORMAT.md §1.
func TestFormatDocDirectory(t *testing.T) {
	sec := docSection(t, readFormatDoc(t), "## 1. The WAL directory")
	fig := sec[strings.Index(sec, "```")+3:]
	fig = fig[:strings.Index(fig, "```")]
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(fig), "\n") {
		fields := strings.Fields(line)
		switch name := fields[0]; {
		case name == "wal/":
		case name == lockName, name == PreparedName, name == AckedName:
			seen[name] = true
		case strings.HasSuffix(name, segmentExt):
			lsn := docNumber(t, line, `first record has LSN (\d+)`)
			if SegmentName(uint64(lsn)) != name {
				t.Errorf("docs/FORMAT.md §1: %s for LSN %d, the code names it %s", name, lsn, SegmentName(uint64(lsn)))
			}
			seen[segmentExt] = true
		default:
			t.Errorf("docs/FORMAT.md §1 lists %q, which the code does not name", name)
		}
	}
	for _, name := range []string{lockName, PreparedName, AckedName, segmentExt} {
		if !seen[name] {
			t.Errorf("docs/FORMAT.md §1 does not list a %s file", name)
		}
	}
	if n := docNumber(t, sec, `as (\d+) lower-case hex digits\s+plus\s+`+"`"+regexp.QuoteMeta(segmentExt)+"`"); n != nameDigits {
		t.Errorf("docs/FORMAT.md §1: names of %d hex digits, the code has %d", n, nameDigits)
	}
}

func readPackageDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFormatDocAckWatermark: docs/FORMAT.md §1 describes the slot of the
// acknowledgement watermark that encode writes and layout.go lays out.
func TestFormatDocAckWatermark(t *testing.T) {
	a := ack{seq: 0x0102030405060708, lsn: 0x1112131415161718, base: 0x2122232425262728, end: 0x3132333435363738}
	for i := range a.logID {
		a.logID[i] = byte(0x60 + i)
	}
	enc := a.encode()
	sec := docSection(t, readFormatDoc(t), "### The acknowledgement watermark")
	if n := docNumber(t, sec, `two slots of (\d+) bytes`); n != ackSlotSize {
		t.Errorf("docs/FORMAT.md §1: slots of %d bytes, the code has %d", n, ackSlotSize)
	}
	if n := docNumber(t, sec, `file of (\d+) bytes`); n != ackFileSize {
		t.Errorf("docs/FORMAT.md §1: a file of %d bytes, the code has %d", n, ackFileSize)
	}
	if n := docNumber(t, sec, `at offsets 0 and\s+(\d+)`); n != ackSlotStride {
		t.Errorf("docs/FORMAT.md §1: second slot at %d, the code has %d", n, ackSlotStride)
	}
	u := func(name string, v uint64) func(*testing.T, string, []byte) {
		return func(t *testing.T, _ string, b []byte) { wantUint(t, name, b, v) }
	}
	fields := []layoutField{
		{"magic", ackMagicOff, func(t *testing.T, text string, b []byte) {
			if !strings.Contains(text, "`"+ackMagic+"`") || string(b) != ackMagic {
				t.Errorf("magic: documented %q, the code wrote %q", text, b)
			}
		}},
		{"format version", ackVersionOff, u("format version", ackVersion)},
		{"slot size", ackSizeOff, u("slot size", ackSlotSize)},
		{"sequence", ackSeqOff, u("sequence", a.seq)},
		{"log id", ackLogIDOff, func(t *testing.T, _ string, b []byte) {
			if !bytes.Equal(b, a.logID[:]) {
				t.Errorf("log id: the encoder wrote % x there, want % x", b, a.logID)
			}
		}},
		{"acknowledged LSN", ackLSNOff, u("acknowledged LSN", a.lsn)},
		{"segment base LSN", ackBaseOff, u("segment base LSN", a.base)},
		{"durable end", ackEndOff, u("durable end", uint64(a.end))},
		{"reserved", ackReservedOff, func(t *testing.T, _ string, b []byte) { wantZero(t, "reserved", b) }},
		{"CRC-32C", ackCRCOff, func(t *testing.T, text string, b []byte) {
			crcRange(t, "watermark checksum", text, enc, b, 0, ackCRCOff-1)
		}},
	}
	checkLayout(t, "docs/FORMAT.md §1 ACKED", markdownTable(t, sec), fields, ackSlotSize, enc)
	if got, ok := decodeAck(enc); !ok || got != a {
		t.Errorf("the sample watermark does not decode: %+v, %v", got, ok)
	}
}
