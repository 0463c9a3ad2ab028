package e2e

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/netnstest"
	"github.com/gotorsocks/torsocks/internal/testnet"
)

// isolationCase runs two curls in one torsocks invocation and looks at the
// circuits their streams use.
type isolationCase struct {
	row  string
	opts []string
	// check judges the two streams' circuits; ok=false is a failure under
	// this torsocks. The summary goes into the table.
	check func(cs []testnet.Circuit) (summary string, ok bool)
}

var isolationCases = []isolationCase{
	{
		row:  "`-i`: two processes get different circuits",
		opts: []string{"-i"},
		check: func(cs []testnet.Circuit) (string, bool) {
			distinct := cs[0].ID != cs[1].ID && cs[0].SOCKSUsername != cs[1].SOCKSUsername &&
				cs[0].SOCKSUsername != "" && cs[1].SOCKSUsername != ""
			s := "different circuits"
			if !distinct {
				s = "NOT isolated"
			}
			return fmt.Sprintf("%s (SOCKS usernames %s)", s, usernames(cs)), distinct
		},
	},
	{
		row: "no `-i`: two processes",
		check: func(cs []testnet.Circuit) (string, bool) {
			s := "two circuits"
			if cs[0].ID == cs[1].ID {
				s = "share one circuit"
			}
			noAuth := cs[0].SOCKSUsername == "" && cs[1].SOCKSUsername == ""
			return fmt.Sprintf("%s (SOCKS usernames %s)", s, usernames(cs)), noAuth
		},
	},
	{
		row:  "`-u alice -p secret`: the credentials reach Tor",
		opts: []string{"-u", "alice", "-p", "secret"},
		check: func(cs []testnet.Circuit) (string, bool) {
			ok := true
			for _, c := range cs {
				ok = ok && c.SOCKSUsername == "alice" && c.SOCKSPassword == "secret"
			}
			s := "yes"
			if !ok {
				s = "NO"
			}
			return fmt.Sprintf("%s (username/password on the circuits: %s/%s, %s/%s)", s,
				quoteOrNone(cs[0].SOCKSUsername), quoteOrNone(cs[0].SOCKSPassword),
				quoteOrNone(cs[1].SOCKSUsername), quoteOrNone(cs[1].SOCKSPassword)), ok
		},
	},
}

func usernames(cs []testnet.Circuit) string {
	return quoteOrNone(cs[0].SOCKSUsername) + ", " + quoteOrNone(cs[1].SOCKSUsername)
}

func quoteOrNone(s string) string {
	if s == "" {
		return "none"
	}
	if len(s) > 24 {
		s = s[:21] + "..."
	}
	return "`" + s + "`"
}

func testIsolation(t *testing.T, e *env) {
	var names []string
	var fs []func(*testing.T)
	for _, ic := range isolationCases {
		e.table.declare(secIsolation, ic.row)
		for _, tool := range []string{toolGo, toolC} {
			names = append(names, tool+"/"+ic.row)
			fs = append(fs, func(t *testing.T) { e.isolationRun(t, ic, tool) })
		}
	}
	concurrently(t, names, fs)
}

// twoCurls holds both requests open until released.
const twoCurls = `curl -sS --max-time 60 "$1" & curl -sS --max-time 60 "$1" & wait`

func (e *env) isolationRun(t *testing.T, ic isolationCase, tool string) {
	if tool == toolC && e.cVersion == "" {
		e.table.set(secIsolation, ic.row, tool, cell{status: "not installed"})
		netnstest.Skip(t, "the C torsocks is not installed (scripts/install-deps.sh)")
	}
	id := e.newID(tool)
	// A port of its own, so that this run's streams are the only ones to it.
	addr, err := e.web.listen(net.JoinHostPort(testHost.String(), "0"), false)
	if err != nil {
		t.Fatal(err)
	}
	dest := addr.String()
	url := fmt.Sprintf("http://%s/hold/%s", dest, id)
	done := make(chan result, 1)
	// /bin/sh, not sh: "torsocks sh" is the C torsocks' "show".
	go func() { done <- e.run(t, tool, ic.opts, "", "/bin/sh", "-c", twoCurls, "sh", url) }()

	var (
		cs      []testnet.Circuit
		problem string
	)
	var (
		r        result
		finished bool
	)
	for deadline := time.Now().Add(60 * time.Second); ; {
		if e.web.waitHeld(id, 2, 200*time.Millisecond) {
			cs, problem = e.streamCircuits(dest, 2)
			break
		}
		select {
		case r = <-done:
			finished = true
		default:
		}
		if finished || time.Now().After(deadline) {
			problem = "the two requests did not both arrive"
			break
		}
	}
	e.web.release(id)
	if !finished {
		r = <-done
	}
	if problem == "" && strings.Count(r.stdout, helloBody(id)) != 2 {
		problem = fmt.Sprintf("curl output %q, stderr %q", r.stdout, lastLine(r.stderr))
	}
	if ms := torsocksMessages(r.stderr); problem != "" && len(ms) > 0 {
		problem += "; torsocks: " + strings.TrimSpace(ms[0])
	}
	var c cell
	ok := false
	if problem != "" {
		c = cell{status: "fails", detail: problem}
	} else {
		for i, c := range cs {
			t.Logf("stream %d: circuit %s %s purpose %s path %v SOCKS %q/%q", i+1, c.ID, c.Status, c.Purpose, c.Path, c.SOCKSUsername, c.SOCKSPassword)
		}
		var summary string
		summary, ok = ic.check(cs)
		c = cell{status: summary}
	}
	for _, cn := range e.rec.connsOf(id) {
		if !cn.allowed {
			c = cell{status: "LEAKS", detail: fmt.Sprintf("%s saw a direct connection from %v", cn.listener, cn.remote.Addr())}
			ok = false
		}
	}
	e.table.set(secIsolation, ic.row, tool, c)
	t.Logf("%s under %s: %s", ic.row, tool, c)
	if tool == toolGo && !ok {
		t.Errorf("%s: %s\nstdout: %s\nstderr: %s", ic.row, c, r.stdout, r.stderr)
	}
}

// streamCircuits returns the circuits of the n successful streams to dest
// ("host:port"), in stream order.
func (e *env) streamCircuits(dest string, n int) ([]testnet.Circuit, string) {
	var streams []testnet.Stream
	for deadline := time.Now().Add(10 * time.Second); ; {
		all, err := e.net.Streams()
		if err != nil {
			return nil, err.Error()
		}
		streams = streams[:0]
		for _, s := range all {
			if s.Target == dest && s.Status == "SUCCEEDED" {
				streams = append(streams, s)
			}
		}
		if len(streams) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(streams) != n {
		return nil, fmt.Sprintf("Tor shows %d streams to %s, want %d", len(streams), dest, n)
	}
	sort.Slice(streams, func(i, j int) bool { return streams[i].ID < streams[j].ID })
	circuits, err := e.net.Circuits()
	if err != nil {
		return nil, err.Error()
	}
	byID := map[string]testnet.Circuit{}
	for _, c := range circuits {
		byID[c.ID] = c
	}
	var cs []testnet.Circuit
	for _, s := range streams {
		c, ok := byID[s.CircuitID]
		if !ok {
			return nil, fmt.Sprintf("stream %s on circuit %s, which circuit-status does not list", s.ID, s.CircuitID)
		}
		cs = append(cs, c)
	}
	return cs, ""
}

// testCanarySelfTest checks that the destination's leak detection works: a
// curl without any torsocks must be classified as a leak.
func testCanarySelfTest(t *testing.T, e *env) {
	id := e.newID(toolNone)
	r := e.run(t, toolNone, nil, "", "curl", "-sS", "--max-time", "20", pageURL(testHost.String(), id))
	c := e.outcome(id, byIP, 0, r, wantBody(id, r))
	if c.status != "LEAKS" {
		t.Errorf("curl without torsocks: %s; want LEAKS (the destination must see a direct connection)", c)
	}
	id = e.newID(toolNone)
	r = e.run(t, toolNone, nil, "", e.goclient, pageURL(id+"."+nameDomain, id))
	if leaks := e.leaksOf(id, byName, 0); len(leaks) == 0 || !strings.HasPrefix(leaks[0], "DNS") {
		t.Errorf("Go client by name without torsocks: leaks %q; want a DNS leak first (the system's nameserver must see the query)\nstdout: %s\nstderr: %s",
			leaks, r.stdout, r.stderr)
	}
}
