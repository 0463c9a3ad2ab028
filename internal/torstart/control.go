package torstart

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// control is an authenticated connection to the tor's unix ControlPort.
type control struct {
	c net.Conn
	r *bufio.Reader
}

// dialControl connects to the ControlPort, checks it speaks the control protocol (PROTOCOLINFO)
// and authenticates with the cookie. Each command must answer within the context's deadline, or
// within timeout when it has none.
func dialControl(ctx context.Context, p Paths, timeout time.Duration) (*control, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", p.Control())
	if err != nil {
		return nil, fmt.Errorf("control port: %w", err)
	}
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	cc := &control{c: c, r: bufio.NewReader(c)}
	if _, err := cc.do("PROTOCOLINFO 1"); err != nil {
		c.Close()
		return nil, err
	}
	cookie, err := os.ReadFile(p.Cookie())
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("control cookie: %w", err)
	}
	if _, err := cc.do("AUTHENTICATE " + hex.EncodeToString(cookie)); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return cc, nil
}

func (cc *control) Close() error { return cc.c.Close() }

// do sends cmd and returns the lines of its reply without their status codes (a data block's
// lines follow its first line). A reply other than 250 is an error.
func (cc *control) do(cmd string) ([]string, error) {
	verb, _, _ := strings.Cut(cmd, " ")
	if _, err := cc.c.Write([]byte(cmd + "\r\n")); err != nil {
		return nil, fmt.Errorf("control %s: %w", verb, err)
	}
	var lines []string
	for {
		line, err := cc.r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("control %s: %w", verb, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 {
			return nil, fmt.Errorf("control %s: malformed reply line %q", verb, line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return nil, fmt.Errorf("control %s: malformed reply line %q", verb, line)
		}
		if code == 650 { // an asynchronous event: not ours
			continue
		}
		lines = append(lines, line[4:])
		switch line[3] {
		case ' ':
			if code != 250 {
				return lines, fmt.Errorf("control %s: %d %s", verb, code, strings.Join(lines, " "))
			}
			return lines, nil
		case '+':
			for {
				dl, err := cc.r.ReadString('\n')
				if err != nil {
					return nil, fmt.Errorf("control %s: %w", verb, err)
				}
				dl = strings.TrimRight(dl, "\r\n")
				if dl == "." {
					break
				}
				lines = append(lines, strings.TrimPrefix(dl, "."))
			}
		}
	}
}

// getInfo returns the value of one GETINFO key.
func (cc *control) getInfo(key string) (string, error) {
	lines, err := cc.do("GETINFO " + key)
	if err != nil {
		return "", err
	}
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("control GETINFO %s: no value in %q", key, lines)
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
	fields := splitFields(v)
	if len(fields) < 2 || fields[1] != "BOOTSTRAP" {
		return p, fmt.Errorf("bootstrap phase %q: not a BOOTSTRAP status", v)
	}
	seen := false
	for _, f := range fields[2:] {
		k, val, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if strings.HasPrefix(val, `"`) {
			if u, err := strconv.Unquote(val); err == nil {
				val = u
			}
		}
		switch k {
		case "PROGRESS":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 || n > 100 {
				return p, fmt.Errorf("bootstrap phase %q: bad PROGRESS", v)
			}
			p.Percent, seen = n, true
		case "TAG":
			p.Tag = val
		case "SUMMARY":
			p.Summary = val
		case "WARNING":
			p.Warning = val
		}
	}
	if !seen {
		return p, fmt.Errorf("bootstrap phase %q: no PROGRESS", v)
	}
	return p, nil
}

// splitFields splits at spaces outside double quotes (backslash escapes inside them).
func splitFields(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, esc := false, false
	for _, r := range s {
		switch {
		case esc:
			esc = false
		case inQ && r == '\\':
			esc = true
		case r == '"':
			inQ = !inQ
		case r == ' ' && !inQ:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
			continue
		}
		cur.WriteRune(r)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
