package torstart

import (
	"context"
	"strings"
	"time"
)

// Status is what --doctor reports of the user's tor (Probe).
type Status struct {
	Running bool // a tor torsocks started answers on its control port
	Pid     int
	// Stale: a pid file names our tor, alive but without its keeper or control port (the next
	// torsocks replaces it).
	Stale     bool
	Bootstrap Progress
	// IsolateSOCKSAuth: its SocksPort isolates streams by SOCKS credentials (torsocks -i).
	IsolateSOCKSAuth bool
	Socks            string
}

// Probe looks at the user's tor without starting, stopping or waiting for anything but its
// control port's answers (each within a few seconds).
func Probe(ctx context.Context, p Paths) (Status, error) {
	st := Status{Socks: p.Socks()}
	pid, state := probe(ctx, p)
	switch state {
	case absent:
		return st, nil
	case unresponsive:
		st.Pid, st.Stale = pid, true
		return st, nil
	}
	st.Running, st.Pid = true, pid
	cc, err := dialControl(ctx, p, 3*time.Second)
	if err != nil {
		return st, err
	}
	defer cc.Close()
	v, err := cc.GetInfo("status/bootstrap-phase")
	if err != nil {
		return st, err
	}
	if st.Bootstrap, err = parseBootstrap(v); err != nil {
		return st, err
	}
	r, err := cc.Do("GETCONF SocksPort")
	if err != nil {
		return st, err
	}
	st.IsolateSOCKSAuth = isolatesAuth(r.Lines)
	return st, nil
}

// isolatesAuth reads GETCONF SocksPort's answer: IsolateSOCKSAuth is on unless a port says
// NoIsolateSOCKSAuth (Tor's default).
func isolatesAuth(lines []string) bool {
	if len(lines) == 0 {
		return false
	}
	for _, l := range lines {
		if strings.Contains(strings.ToLower(l), "noisolatesocksauth") {
			return false
		}
	}
	return true
}
