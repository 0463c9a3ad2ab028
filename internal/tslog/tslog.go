// Package tslog writes log/slog records in torsocks' log format. That is its one job.
//
// A line reads
//
//	<epoch seconds> LEVEL torsocks[PID]: message key=value (in func() at file:line)
//
// with LEVEL one of ERROR, WARNING, NOTICE, DEBUG, the time left out when Options.Time is false and
// the "(in ...)" part when the record has no PC. A "pid" attribute replaces the PID field, so the
// supervisor can log on behalf of the traced process that did something.
package tslog

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// torsocks' log levels.
const (
	LevelNone    = 1
	LevelError   = 2
	LevelWarning = 3
	LevelNotice  = 4
	LevelDebug   = 5
)

// Options configure a Handler.
type Options struct {
	Level int  // torsocks level 1-5: 1 nothing, 2 errors, 3 warnings, 4 notices, 5 debug
	Time  bool // prefix each line with the epoch seconds (torsocks' TORSOCKS_LOG_TIME=1)
	PID   int  // the PID field when a record has no "pid" attribute; 0: os.Getpid()
}

// SlogLevel is the lowest slog level a torsocks level lets through, and whether it lets any.
func SlogLevel(level int) (slog.Level, bool) {
	switch {
	case level <= LevelNone:
		return 0, false
	case level == LevelError:
		return slog.LevelError, true
	case level == LevelWarning:
		return slog.LevelWarn, true
	case level == LevelNotice:
		return slog.LevelInfo, true
	}
	return slog.LevelDebug, true
}

// Handler is a slog.Handler writing torsocks' format.
type Handler struct {
	out     *output
	min     slog.Level
	enabled bool
	time    bool
	pid     int
	// attrs are the preformatted " key=value" of WithAttrs; pidAttr a "pid" among them (0: none).
	attrs   string
	pidAttr int
	group   string // prefix of keys, from WithGroup ("a.b.")
}

// output is the writer shared by a Handler and those derived from it. The mutex makes each line
// one Write, so lines of concurrent goroutines never interleave.
type output struct {
	mu sync.Mutex
	w  io.Writer
}

// NewHandler returns a Handler writing to w.
func NewHandler(w io.Writer, opts Options) *Handler {
	lo, enabled := SlogLevel(opts.Level)
	pid := opts.PID
	if pid == 0 {
		pid = os.Getpid()
	}
	return &Handler{out: &output{w: w}, min: lo, enabled: enabled, time: opts.Time, pid: pid}
}

// New returns a Logger with a Handler writing to w.
func New(w io.Writer, opts Options) *slog.Logger { return slog.New(NewHandler(w, opts)) }

// OpenFile opens a log file for appending, creating it if needed (torsocks' TORSOCKS_LOG_FILE_PATH).
func OpenFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
}

// Enabled reports whether records of the level are written.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return h.enabled && l >= h.min }

// LevelName is torsocks' name of a level.
func LevelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "NOTICE"
	}
	return "DEBUG"
}

// Handle writes one record as one line.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	if !h.Enabled(context.Background(), r.Level) {
		return nil
	}
	pid := h.pid
	if h.pidAttr != 0 {
		pid = h.pidAttr
	}
	var attrs strings.Builder
	attrs.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		if p, ok := pidOf(h.group, a); ok {
			pid = p
			return true
		}
		appendAttr(&attrs, h.group, a)
		return true
	})

	b := make([]byte, 0, 160)
	if h.time && !r.Time.IsZero() {
		b = strconv.AppendInt(b, r.Time.Unix(), 10)
		b = append(b, ' ')
	}
	b = append(b, LevelName(r.Level)...)
	b = append(b, " torsocks["...)
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, "]: "...)
	b = appendOneLine(b, r.Message)
	b = append(b, attrs.String()...)
	if r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		if f.Function != "" || f.File != "" {
			b = append(b, " (in "...)
			b = append(b, shortFunc(f.Function)...)
			b = append(b, "() at "...)
			b = append(b, filepath.Base(f.File)...)
			b = append(b, ':')
			b = strconv.AppendInt(b, int64(f.Line), 10)
			b = append(b, ')')
		}
	}
	b = append(b, '\n')

	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	_, err := h.out.w.Write(b)
	return err
}

// WithAttrs returns a Handler adding attrs to every record.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		if p, ok := pidOf(h.group, a); ok {
			h2.pidAttr = p
			continue
		}
		appendAttr(&b, h.group, a)
	}
	h2.attrs = b.String()
	return &h2
}

// WithGroup returns a Handler qualifying later keys with name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group = h.group + name + "."
	return &h2
}

// pidOf recognises a top-level "pid" attribute holding an integer.
func pidOf(group string, a slog.Attr) (int, bool) {
	if group != "" || a.Key != "pid" {
		return 0, false
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindInt64:
		return int(v.Int64()), true
	case slog.KindUint64:
		return int(v.Uint64()), true
	}
	return 0, false
}

func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g := a.Value.Group()
		if len(g) == 0 {
			return
		}
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, ga := range g {
			appendAttr(b, p, ga)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(quoteIfNeeded(prefix + a.Key))
	b.WriteByte('=')
	b.WriteString(quoteIfNeeded(a.Value.String()))
}

// quoteIfNeeded quotes a key or value that would not read back as one word.
func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r == utf8.RuneError || r == ' ' || r == '=' || r == '"' || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// appendOneLine appends a message with its line breaks escaped: one record, one line.
func appendOneLine(b []byte, msg string) []byte {
	if !strings.ContainsAny(msg, "\n\r") {
		return append(b, msg...)
	}
	return append(b, strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(msg)...)
}

// shortFunc strips the package path: "example.com/a/b.(*T).m" becomes "(*T).m".
func shortFunc(fn string) string {
	if i := strings.LastIndexByte(fn, '/'); i >= 0 {
		fn = fn[i+1:]
	}
	if i := strings.IndexByte(fn, '.'); i >= 0 {
		fn = fn[i+1:]
	}
	return fn
}
