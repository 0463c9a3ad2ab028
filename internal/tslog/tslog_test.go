package tslog

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Unix(1700000000, 0)

func record(level slog.Level, msg string, pc uintptr, attrs ...slog.Attr) slog.Record {
	r := slog.NewRecord(t0, level, msg, pc)
	r.AddAttrs(attrs...)
	return r
}

func handle(t *testing.T, h slog.Handler, r slog.Record) string {
	t.Helper()
	var buf bytes.Buffer
	hh := h.(*Handler)
	hh.out = &output{w: &buf}
	if err := hh.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestLevels(t *testing.T) {
	levels := []struct {
		l    slog.Level
		name string
		min  int // lowest torsocks level that shows it
	}{
		{slog.LevelError, "ERROR", LevelError},
		{slog.LevelWarn, "WARNING", LevelWarning},
		{slog.LevelInfo, "NOTICE", LevelNotice},
		{slog.LevelDebug, "DEBUG", LevelDebug},
	}
	for tl := LevelNone; tl <= LevelDebug; tl++ {
		for _, lv := range levels {
			var buf bytes.Buffer
			h := NewHandler(&buf, Options{Level: tl, Time: true, PID: 42})
			enabled := h.Enabled(context.Background(), lv.l)
			if want := tl >= lv.min; enabled != want {
				t.Errorf("torsocks level %d, %v: enabled %v, want %v", tl, lv.l, enabled, want)
			}
			if err := h.Handle(context.Background(), record(lv.l, "hello", 0)); err != nil {
				t.Fatal(err)
			}
			want := ""
			if tl >= lv.min {
				want = "1700000000 " + lv.name + " torsocks[42]: hello\n"
			}
			if buf.String() != want {
				t.Errorf("torsocks level %d, %v: %q, want %q", tl, lv.l, buf.String(), want)
			}
		}
	}
}

func TestLevelNames(t *testing.T) {
	for l, want := range map[slog.Level]string{
		slog.LevelError + 4: "ERROR", slog.LevelError: "ERROR", slog.LevelWarn: "WARNING", slog.LevelWarn + 1: "WARNING",
		slog.LevelInfo: "NOTICE", slog.LevelDebug: "DEBUG", slog.LevelDebug - 4: "DEBUG",
	} {
		if got := LevelName(l); got != want {
			t.Errorf("LevelName(%v) = %s, want %s", l, got, want)
		}
	}
}

func TestTimeOff(t *testing.T) {
	got := handle(t, NewHandler(nil, Options{Level: LevelWarning, PID: 7}), record(slog.LevelWarn, "m", 0))
	if want := "WARNING torsocks[7]: m\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	// A record without time has no time field either.
	r := slog.NewRecord(time.Time{}, slog.LevelWarn, "m", 0)
	got = handle(t, NewHandler(nil, Options{Level: LevelWarning, Time: true, PID: 7}), r)
	if want := "WARNING torsocks[7]: m\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

func TestDefaultPID(t *testing.T) {
	got := handle(t, NewHandler(nil, Options{Level: LevelWarning}), record(slog.LevelWarn, "m", 0))
	if want := fmt.Sprintf("WARNING torsocks[%d]: m\n", os.Getpid()); got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

func TestPIDOverride(t *testing.T) {
	h := NewHandler(nil, Options{Level: LevelDebug, PID: 1})
	got := handle(t, h, record(slog.LevelWarn, "UDP to 203.0.113.10:9999 refused: Tor carries TCP only", 0, slog.Int("pid", 4242)))
	if want := "WARNING torsocks[4242]: UDP to 203.0.113.10:9999 refused: Tor carries TCP only\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	// From WithAttrs, and a record's own pid wins over it.
	h2 := h.WithAttrs([]slog.Attr{slog.Int("pid", 100), slog.String("fd", "3")})
	if got, want := handle(t, h2, record(slog.LevelWarn, "m", 0)), "WARNING torsocks[100]: m fd=3\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got, want := handle(t, h2, record(slog.LevelWarn, "m", 0, slog.Uint64("pid", 200))), "WARNING torsocks[200]: m fd=3\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	// A non-integer pid, or one inside a group, is an ordinary attribute.
	if got, want := handle(t, h, record(slog.LevelWarn, "m", 0, slog.String("pid", "x"))), "WARNING torsocks[1]: m pid=x\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got, want := handle(t, h.WithGroup("g"), record(slog.LevelWarn, "m", 0, slog.Int("pid", 9))), "WARNING torsocks[1]: m g.pid=9\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

func TestAttrs(t *testing.T) {
	h := NewHandler(nil, Options{Level: LevelDebug, PID: 1})
	r := record(slog.LevelInfo, "line1\nline2", 0,
		slog.String("dst", "203.0.113.10:80"), slog.String("why", "two words"), slog.String("empty", ""),
		slog.Group("sock", slog.Int("fd", 3), slog.Bool("v6", true)), slog.Attr{}, slog.Group("none"))
	got := handle(t, h.WithGroup("").WithAttrs(nil), r)
	want := `NOTICE torsocks[1]: line1\nline2 dst=203.0.113.10:80 why="two words" empty="" sock.fd=3 sock.v6=true` + "\n"
	if got != want {
		t.Errorf("\n got %q\nwant %q", got, want)
	}
}

func TestSource(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, Options{Level: LevelDebug, Time: false, PID: 5})
	_, _, line, _ := runtime.Caller(0)
	log.Error("boom", "errno", "EPERM")
	want := fmt.Sprintf("ERROR torsocks[5]: boom errno=EPERM (in TestSource() at tslog_test.go:%d)\n", line+1)
	if buf.String() != want {
		t.Errorf("\n got %q\nwant %q", buf.String(), want)
	}
	buf.Reset()
	func() { log.Debug("inner") }()
	if !regexp.MustCompile(`^DEBUG torsocks\[5\]: inner \(in TestSource\.func1\(\) at tslog_test\.go:\d+\)\n$`).MatchString(buf.String()) {
		t.Errorf("got %q", buf.String())
	}
}

func TestShortFunc(t *testing.T) {
	for in, want := range map[string]string{
		"github.com/gotorsocks/torsocks/internal/supervisor.(*Server).handleConnect": "(*Server).handleConnect",
		"main.main":      "main",
		"pkg.f.func1":    "f.func1",
		"noPackageNameX": "noPackageNameX",
	} {
		if got := shortFunc(in); got != want {
			t.Errorf("shortFunc(%q) = %q, want %q", in, got, want)
		}
	}
}

// Each record is one Write, even from many goroutines.
func TestConcurrentLines(t *testing.T) {
	w := &countingWriter{}
	log := New(w, Options{Level: LevelDebug, Time: true, PID: 1})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := log.With("g", g)
			for i := 0; i < 200; i++ {
				l.Warn("message", "i", i)
			}
		}()
	}
	wg.Wait()
	if w.writes != 1600 {
		t.Errorf("%d writes, want 1600", w.writes)
	}
	for _, line := range strings.Split(strings.TrimSuffix(w.buf.String(), "\n"), "\n") {
		if !regexp.MustCompile(`^\d+ WARNING torsocks\[1\]: message g=\d i=\d+ \(in .*\)$`).MatchString(line) {
			t.Fatalf("line %q", line)
		}
	}
}

// countingWriter is deliberately unsynchronised: the race detector checks the handler's mutex.
type countingWriter struct {
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if bytes.Count(p, []byte("\n")) != 1 {
		panic("not one line")
	}
	w.writes++
	return w.buf.Write(p)
}

func TestOpenFile(t *testing.T) {
	path := t.TempDir() + "/ts.log"
	for i := 0; i < 2; i++ {
		f, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		New(f, Options{Level: LevelWarning, PID: 1}).Warn("x")
		f.Close()
	}
	data, _ := os.ReadFile(path)
	if got := strings.Count(string(data), "WARNING torsocks[1]: x"); got != 2 {
		t.Errorf("file %q", data)
	}
}

func TestSlogLevel(t *testing.T) {
	if _, ok := SlogLevel(LevelNone); ok {
		t.Error("level 1 lets something through")
	}
	if _, ok := SlogLevel(0); ok {
		t.Error("level 0 lets something through")
	}
	if l, ok := SlogLevel(9); !ok || l != slog.LevelDebug {
		t.Error("level 9 is not debug")
	}
}
