package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gotorsocks/torsocks/internal/socks5test"
)

// The destination side of the test network: every server records the source
// of each connection it accepts and whether that source is legitimate. A
// legitimate source is a Tor exit (they connect out from exitSource) or, for
// the onion target, the onion service's own tor process (it connects from the
// test host's address, so it is told apart by the process owning the
// connecting socket). Anything else reached the destination without Tor: a
// leak.

// conn is one accepted connection.
type conn struct {
	listener string         // listening address
	remote   netip.AddrPort // the peer's address
	allowed  bool           // from an exit or the onion service
	via      string         // "exit", "onion service" or "LEAK"
}

// recorder is shared by all servers: accepted connections and the run IDs
// each connection carried (from the request path or the first line).
type recorder struct {
	mu    sync.Mutex
	conns []conn
	tags  map[netip.AddrPort]string // remote -> run ID
}

func newRecorder() *recorder {
	return &recorder{tags: map[netip.AddrPort]string{}}
}

// accepted records c, accepted on the listener at laddr, and classifies its
// source.
func (r *recorder) accepted(c net.Conn, onionTarget bool) {
	remote := addrPort(c.RemoteAddr())
	local := addrPort(c.LocalAddr())
	rec := conn{listener: local.String(), remote: remote, via: "LEAK"}
	switch {
	case remote.Addr() == exitSource:
		rec.allowed, rec.via = true, "exit"
	case onionTarget && remote.Addr() == onionSource:
		rec.allowed, rec.via = true, "onion service"
	}
	r.mu.Lock()
	r.conns = append(r.conns, rec)
	r.mu.Unlock()
}

// tag notes that the connection from remote carried run id.
func (r *recorder) tag(remote netip.AddrPort, id string) {
	r.mu.Lock()
	r.tags[remote] = id
	r.mu.Unlock()
}

// connsOf returns the connections that carried run id.
func (r *recorder) connsOf(id string) []conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cs []conn
	for _, c := range r.conns {
		if r.tags[c.remote] == id {
			cs = append(cs, c)
		}
	}
	return cs
}

// leaks returns every connection not from a legitimate source, with the run
// ID it carried ("" if none).
func (r *recorder) leaks() map[conn]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ls := map[conn]string{}
	for _, c := range r.conns {
		if !c.allowed {
			ls[c] = r.tags[c.remote]
		}
	}
	return ls
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// recordingListener classifies every connection it accepts.
type recordingListener struct {
	net.Listener
	rec         *recorder
	onionTarget bool
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.rec.accepted(c, l.onionTarget)
	}
	return c, err
}

// webServer serves, on every listener it is given:
//
//	/t/ID/            "hello ID from the test host\n"
//	/t/ID/repo.git/   a bare git repository for dumb-HTTP clones
//	/hold/ID          waits until release(ID) (isolation tests keep streams open)
type webServer struct {
	rec  *recorder
	repo string // bare repository directory
	srvs []*http.Server

	mu    sync.Mutex
	held  map[string]int
	holds map[string]chan struct{}
	cond  *sync.Cond
}

func helloBody(id string) string { return "hello " + id + " from the test host\n" }

func newWebServer(rec *recorder, repo string) *webServer {
	w := &webServer{rec: rec, repo: repo, held: map[string]int{}, holds: map[string]chan struct{}{}}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// listen serves on addr; onionTarget marks the onion service's target.
func (w *webServer) listen(addr string, onionTarget bool) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(w.serveHTTP), ReadHeaderTimeout: 30 * time.Second}
	w.mu.Lock()
	w.srvs = append(w.srvs, srv)
	w.mu.Unlock()
	go srv.Serve(recordingListener{Listener: l, rec: w.rec, onionTarget: onionTarget})
	return l.Addr(), nil
}

func (w *webServer) close() {
	w.mu.Lock()
	srvs := w.srvs
	for _, ch := range w.holds {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
	w.mu.Unlock()
	for _, s := range srvs {
		s.Close()
	}
}

func (w *webServer) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		http.Error(rw, "bad remote", http.StatusInternalServerError)
		return
	}
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	if len(parts) < 2 || parts[1] == "" {
		http.NotFound(rw, r)
		return
	}
	id := parts[1]
	w.rec.tag(remote, id)
	switch parts[0] {
	case "t":
		rest := ""
		if len(parts) == 3 {
			rest = parts[2]
		}
		if rest == "" {
			io.WriteString(rw, helloBody(id))
			return
		}
		if strings.HasPrefix(rest, "repo.git/") {
			http.StripPrefix("/t/"+id+"/repo.git", http.FileServer(http.Dir(w.repo))).ServeHTTP(rw, r)
			return
		}
		http.NotFound(rw, r)
	case "page":
		// /page/ID/?ids=A,B,...: a page with 20 scripts, the k-th from the k-th name of ids
		// (round robin), each adding "<p>async ID k</p>" (async_test.go).
		ids := strings.Split(r.URL.Query().Get("ids"), ",")
		rw.Header().Set("Content-Type", "text/html")
		io.WriteString(rw, "<html><body>\n")
		for k := range 20 {
			h := ids[k%len(ids)]
			fmt.Fprintf(rw, "<script src=\"http://%s.%s/js/%s/?k=%d\"></script>\n", h, nameDomain, h, k)
		}
		io.WriteString(rw, "</body></html>\n")
	case "js":
		k, _ := strconv.Atoi(r.URL.Query().Get("k"))
		rw.Header().Set("Content-Type", "application/javascript")
		fmt.Fprintf(rw, "var p = document.createElement('p'); p.textContent = 'async %s %d'; document.body.appendChild(p);\n", id, k)
	case "hold":
		ch := w.hold(id)
		select {
		case <-ch:
		case <-r.Context().Done():
		case <-time.After(90 * time.Second):
		}
		io.WriteString(rw, helloBody(id))
	default:
		http.NotFound(rw, r)
	}
}

// holdChan returns the channel that releases the held requests of id, making it on first use.
// w.mu must be held.
func (w *webServer) holdChan(id string) chan struct{} {
	ch := w.holds[id]
	if ch == nil {
		ch = make(chan struct{})
		w.holds[id] = ch
	}
	return ch
}

func (w *webServer) hold(id string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.holdChan(id)
	w.held[id]++
	w.cond.Broadcast()
	return ch
}

// waitHeld waits until n requests of id are held, or the timeout passes.
func (w *webServer) waitHeld(id string, n int, timeout time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return socks5test.WaitCond(w.cond, timeout, func() bool { return w.held[id] >= n })
}

// release lets the held requests of id answer.
func (w *webServer) release(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.holdChan(id)
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// The banner service speaks first, like an SSH server: it sends banner, reads
// one line "hello ID", echoes it and closes. A client that loses or
// over-reads bytes around the SOCKS handshake shows a different transcript.
const banner = "SSH-2.0-e2e_test\r\n"

func startBanner(rec *recorder, addr string) (*socks5test.Sink, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return socks5test.Serve(recordingListener{Listener: l, rec: rec}, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.WriteString(c, banner); err != nil {
			return
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "hello "); ok {
			rec.tag(addrPort(c.RemoteAddr()), id)
		}
		if err == nil {
			io.WriteString(c, line)
		}
	}), nil
}
