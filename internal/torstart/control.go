package torstart

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gotorsocks/torsocks/internal/torcontrol"
)

// dialControl connects to the tor's unix ControlPort and authenticates with the cookie, within
// the context's deadline, or within timeout when it has none.
func dialControl(ctx context.Context, p Paths, timeout time.Duration) (*torcontrol.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return torcontrol.Dial(ctx, "unix", p.Control(), p.Cookie())
}

// Progress is one bootstrap status of Tor (GETINFO status/bootstrap-phase).
type Progress struct {
	Percent int
	Tag     string // "loading_descriptors"
	Summary string // "Loading relay descriptors"
	Warning string // set when Tor reports a bootstrap problem ("Connection refused")
}

func (p Progress) String() string {
	s := fmt.Sprintf("%d%% %s", p.Percent, strings.ToLower(p.Summary))
	if p.Warning != "" {
		s += " (" + p.Warning + ")"
	}
	return s
}

// parseBootstrap reads a status/bootstrap-phase value:
// NOTICE BOOTSTRAP PROGRESS=45 TAG=loading_descriptors SUMMARY="Loading relay descriptors"
// (WARN ... WARNING="..." REASON=... when a step failed).
func parseBootstrap(v string) (Progress, error) {
	var p Progress
	fields, err := torcontrol.Fields(v)
	if err != nil {
		return p, fmt.Errorf("bootstrap phase: %w", err)
	}
	if len(fields) < 2 || fields[1] != "BOOTSTRAP" {
		return p, fmt.Errorf("bootstrap phase %q: not a BOOTSTRAP status", v)
	}
	kv := torcontrol.KeyValues(fields[2:])
	pct, ok := kv["PROGRESS"]
	if !ok {
		return p, fmt.Errorf("bootstrap phase %q: no PROGRESS", v)
	}
	n, err := strconv.Atoi(pct)
	if err != nil || n < 0 || n > 100 {
		return p, fmt.Errorf("bootstrap phase %q: bad PROGRESS", v)
	}
	p.Percent, p.Tag, p.Summary, p.Warning = n, kv["TAG"], kv["SUMMARY"], kv["WARNING"]
	return p, nil
}
