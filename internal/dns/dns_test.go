package dns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/standin"
	"golang.org/x/net/dns/dnsmessage"
)

const testHosts = `# test hosts
127.0.0.1	localhost
10.1.2.3	myhost.lan myhost   # comment
2001:db8::77	v6host.lan
fe80::1%lo	linklocal.lan
bogus line
`

// fakeResolver answers from maps and counts calls.
type fakeResolver struct {
	addrs map[string]netip.Addr
	ptrs  map[netip.Addr]string
	down  bool          // every call fails (Tor unreachable)
	block chan struct{} // if set, calls wait for it to close
	calls atomic.Int64
}

func (f *fakeResolver) Resolve(ctx context.Context, name string) (netip.Addr, error) {
	f.calls.Add(1)
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		}
	}
	if f.down {
		return netip.Addr{}, errors.New("connection refused")
	}
	a, ok := f.addrs[name]
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return a, nil
}

func (f *fakeResolver) ResolvePTR(ctx context.Context, a netip.Addr) (string, error) {
	f.calls.Add(1)
	if f.down {
		return "", errors.New("connection refused")
	}
	n, ok := f.ptrs[a]
	if !ok {
		return "", ErrNotFound
	}
	return n, nil
}

func newFake() *fakeResolver {
	return &fakeResolver{
		addrs: map[string]netip.Addr{
			"example.com":    netip.MustParseAddr("93.184.216.34"),
			"v6only.example": netip.MustParseAddr("2001:db8::1"),
			"evil.example":   netip.MustParseAddr("127.42.42.9"),
		},
		ptrs: map[netip.Addr]string{netip.MustParseAddr("8.8.8.8"): "dns.google"},
	}
}

func newServer(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.ReadHosts == nil {
		opts.ReadHosts = func() ([]byte, error) { return []byte(testHosts), nil }
	}
	opts.Logf = t.Logf
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type qopt struct {
	id       uint16
	class    dnsmessage.Class
	opcode   dnsmessage.OpCode
	edns     int // UDP size in an OPT record; 0: no OPT
	ednsVer  uint32
	twoOPT   bool
	noRD     bool
	response bool
}

func buildQuery(t testing.TB, name string, typ dnsmessage.Type, o qopt) []byte {
	t.Helper()
	if o.class == 0 {
		o.class = dnsmessage.ClassINET
	}
	if o.id == 0 {
		o.id = 0xbeef
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: o.id, RecursionDesired: !o.noRD, OpCode: o.opcode, Response: o.response})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: o.class}); err != nil {
		t.Fatal(err)
	}
	b.StartAdditionals()
	for range map[bool]int{false: 1, true: 2}[o.twoOPT] {
		if o.edns > 0 {
			var rh dnsmessage.ResourceHeader
			rh.SetEDNS0(o.edns, 0, false)
			rh.TTL |= o.ednsVer << 16
			if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	m, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func parse(t testing.TB, resp []byte) dnsmessage.Message {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("response does not parse: %v (%x)", err, resp)
	}
	if !m.Response {
		t.Fatal("QR not set")
	}
	return m
}

// ask sends one query and returns the parsed response.
func ask(t testing.TB, s *Server, name string, typ dnsmessage.Type, o qopt) dnsmessage.Message {
	t.Helper()
	resp := s.Answer(context.Background(), buildQuery(t, name, typ, o), MaxUDPSize)
	if resp == nil {
		t.Fatalf("%s %v: no response", name, typ)
	}
	return parse(t, resp)
}

// answerOf returns the single answer's data as text ("" if none), failing on more.
func answerOf(t testing.TB, m dnsmessage.Message) string {
	t.Helper()
	switch len(m.Answers) {
	case 0:
		return ""
	case 1:
	default:
		t.Fatalf("%d answers", len(m.Answers))
	}
	switch b := m.Answers[0].Body.(type) {
	case *dnsmessage.AResource:
		return netip.AddrFrom4(b.A).String()
	case *dnsmessage.AAAAResource:
		return netip.AddrFrom16(b.AAAA).String()
	case *dnsmessage.PTRResource:
		return b.PTR.String()
	}
	t.Fatalf("unexpected answer %v", m.Answers[0].Body)
	return ""
}

type tcase struct {
	name   string
	typ    dnsmessage.Type
	o      qopt
	rcode  dnsmessage.RCode
	answer string // exact answer, or a prefix ending in "*", or "" for none
	ttl    uint32 // checked when non-zero
}

func runCases(t *testing.T, s *Server, cases []tcase) {
	t.Helper()
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%v", c.name, c.typ), func(t *testing.T) {
			m := ask(t, s, c.name, c.typ, c.o)
			if m.RCode != c.rcode {
				t.Fatalf("rcode %v, want %v", m.RCode, c.rcode)
			}
			got := answerOf(t, m)
			if p, ok := strings.CutSuffix(c.answer, "*"); ok {
				if !strings.HasPrefix(got, p) {
					t.Fatalf("answer %q, want %s", got, c.answer)
				}
			} else if got != c.answer {
				t.Fatalf("answer %q, want %q", got, c.answer)
			}
			if c.ttl != 0 && len(m.Answers) == 1 && m.Answers[0].Header.TTL != c.ttl {
				t.Fatalf("TTL %d, want %d", m.Answers[0].Header.TTL, c.ttl)
			}
			if len(m.Answers) == 1 && !strings.EqualFold(m.Answers[0].Header.Name.String(), c.name) {
				t.Fatalf("answer owner %v", m.Answers[0].Header.Name)
			}
		})
	}
}

const (
	A    = dnsmessage.TypeA
	AAAA = dnsmessage.TypeAAAA
	PTR  = dnsmessage.TypePTR
	ok   = dnsmessage.RCodeSuccess
	nx   = dnsmessage.RCodeNameError
	sf   = dnsmessage.RCodeServerFailure
	fe   = dnsmessage.RCodeFormatError
	ni   = dnsmessage.RCodeNotImplemented
)

func TestMapMode(t *testing.T) {
	s := newServer(t, Options{Resolver: newFake()})
	runCases(t, s, []tcase{
		{name: "example.com.", typ: A, answer: "127.192.0.1", ttl: StandInTTL},
		{name: "EXAMPLE.com.", typ: A, answer: "127.192.0.1"},
		{name: "example.com.", typ: AAAA, answer: "fd74:6f72:736b::1", ttl: StandInTTL},
		{name: "nonexistent.example.", typ: A, answer: "127.192.0.2"}, // every name "exists" in map mode
		{name: "ABC.onion.", typ: A, answer: "127.42.42.1"},
		{name: "abc.onion.", typ: A, answer: "127.42.42.1"},
		{name: "www.abc.onion.", typ: A, answer: "127.42.42.2"},
		{name: "abc.onion.", typ: AAAA, answer: "fd74:6f72:736b::2"},
		{name: "1.0.192.127.in-addr.arpa.", typ: PTR, answer: "example.com."},
		{name: "1.42.42.127.in-addr.arpa.", typ: PTR, answer: "abc.onion."},
		{name: "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.b.6.3.7.2.7.f.6.4.7.d.f.ip6.arpa.", typ: PTR, answer: "abc.onion."},
		{name: "99.0.192.127.in-addr.arpa.", typ: PTR, rcode: nx}, // unallocated stand-in
		{name: "1.0.0.127.in-addr.arpa.", typ: PTR, answer: "localhost."},
		{name: "3.2.1.10.in-addr.arpa.", typ: PTR, answer: "myhost.lan."},
		{name: "1.1.168.192.in-addr.arpa.", typ: PTR, rcode: nx}, // private: never asked
		{name: "8.8.8.8.in-addr.arpa.", typ: PTR, answer: "dns.google."},
		{name: "9.9.9.9.in-addr.arpa.", typ: PTR, rcode: nx},
		{name: "1.2.3.in-addr.arpa.", typ: PTR, rcode: nx},
		{name: "01.2.3.4.in-addr.arpa.", typ: PTR, rcode: nx},
		{name: "example.com.", typ: PTR, rcode: nx},
		{name: "localhost.", typ: A, answer: "127.0.0.1"},
		{name: "localhost.", typ: AAAA, answer: "::1"},
		{name: "LocalHost.LocalDomain.", typ: A, answer: "127.0.0.1"},
		{name: "ip6-localhost.", typ: AAAA, answer: "::1"},
		{name: "ip6-loopback.", typ: A, answer: "127.0.0.1"},
		{name: "foo.localhost.", typ: AAAA, answer: "::1"},
		{name: "myhost.", typ: A, answer: "10.1.2.3"},
		{name: "MyHost.Lan.", typ: A, answer: "10.1.2.3"},
		{name: "myhost.lan.", typ: AAAA},                             // in hosts without IPv6: NODATA
		{name: "v6host.lan.", typ: AAAA, answer: "2001:db8::77"},     //
		{name: "linklocal.lan.", typ: AAAA, answer: "fe80::1"},       // zone dropped
		{name: "intranet.", typ: A, rcode: nx},                       // single label
		{name: "bad_but-ok.example.", typ: A, answer: "127.192.0.*"}, // '_' allowed
		{name: "bad\\ name.example.", typ: A, rcode: nx},
		{name: "1.0.0.127.in-addr.arpa.", typ: A},
		{name: ".", typ: A},
		{name: "example.com.", typ: dnsmessage.TypeMX},
		{name: "example.com.", typ: dnsmessage.TypeTXT},
		{name: "example.com.", typ: dnsmessage.TypeSRV},
		{name: "example.com.", typ: dnsmessage.TypeNS},
		{name: "example.com.", typ: dnsmessage.TypeSOA},
		{name: "example.com.", typ: dnsmessage.TypeCNAME},
		{name: "example.com.", typ: dnsmessage.TypeALL},
		{name: "example.com.", typ: dnsmessage.TypeSVCB},
		{name: "example.com.", typ: dnsmessage.TypeHTTPS},
		{name: "abc.onion.", typ: dnsmessage.TypeHTTPS},
		{name: "example.com.", typ: A, o: qopt{class: dnsmessage.ClassCHAOS}, rcode: ni},
		{name: "example.com.", typ: A, o: qopt{opcode: 2}, rcode: ni},
	})
}

func TestHeaderEcho(t *testing.T) {
	s := newServer(t, Options{})
	for _, rd := range []bool{true, false} {
		m := ask(t, s, "ExAmPle.COM.", A, qopt{id: 0x1234, noRD: !rd})
		if m.ID != 0x1234 || m.RecursionDesired != rd || !m.RecursionAvailable || m.Truncated || m.Authoritative {
			t.Fatalf("header %+v", m.Header)
		}
		if len(m.Questions) != 1 || m.Questions[0].Name.String() != "ExAmPle.COM." || m.Questions[0].Type != A {
			t.Fatalf("question not echoed as asked (case kept for 0x20 resolvers): %v", m.Questions)
		}
		if len(m.Additionals) != 0 {
			t.Fatal("OPT without EDNS in the query")
		}
	}
}

func TestEDNS(t *testing.T) {
	s := newServer(t, Options{})
	m := ask(t, s, "example.com.", A, qopt{edns: 1232})
	if len(m.Additionals) != 1 || m.Additionals[0].Header.Type != dnsmessage.TypeOPT || m.Additionals[0].Header.Class != 4096 {
		t.Fatalf("additionals %+v", m.Additionals)
	}
	if answerOf(t, m) == "" {
		t.Fatal("no answer")
	}
	m = ask(t, s, "example.com.", A, qopt{edns: 1232, ednsVer: 1})
	if len(m.Additionals) != 1 || m.Additionals[0].Header.ExtendedRCode(m.RCode) != rcodeBADVERS || len(m.Answers) != 0 {
		t.Fatalf("EDNS version 1: rcode %v, additionals %+v", m.RCode, m.Additionals)
	}
	m = ask(t, s, "example.com.", A, qopt{edns: 1232, twoOPT: true})
	if m.RCode != fe {
		t.Fatalf("two OPT records: %v", m.RCode)
	}
}

func TestTruncation(t *testing.T) {
	s := newServer(t, Options{})
	q := buildQuery(t, "example.com.", A, qopt{})
	full := s.Answer(context.Background(), q, MaxUDPSize)
	for _, tc := range []struct {
		max      int
		tc       bool
		question bool
	}{
		{max: len(full), tc: false, question: true},
		{max: len(full) - 1, tc: true, question: true},
		{max: len(q), tc: true, question: true},
		{max: 20, tc: true, question: false},
		{max: 0, tc: true, question: false},
	} {
		resp := s.Answer(context.Background(), q, tc.max)
		m := parse(t, resp)
		if m.Truncated != tc.tc || (len(m.Questions) == 1) != tc.question || (len(resp) > tc.max && len(resp) != 12) {
			t.Fatalf("max %d: %d bytes, TC %v, %d questions, %d answers", tc.max, len(resp), m.Truncated, len(m.Questions), len(m.Answers))
		}
		if m.ID != 0xbeef {
			t.Fatalf("ID %x", m.ID)
		}
	}
	// EDNS raises a small UDP limit to the query's size (at least 512).
	qe := buildQuery(t, "example.com.", A, qopt{edns: 100})
	if m := parse(t, s.Answer(context.Background(), qe, 30)); m.Truncated || len(m.Answers) != 1 {
		t.Fatalf("EDNS query truncated: %+v", m.Header)
	}
}

func TestMalformed(t *testing.T) {
	s := newServer(t, Options{})
	valid := buildQuery(t, "example.com.", A, qopt{})
	bc := context.Background()
	for name, q := range map[string][]byte{
		"empty":    nil,
		"short":    valid[:11],
		"response": buildQuery(t, "example.com.", A, qopt{response: true}),
	} {
		if r := s.Answer(bc, q, MaxUDPSize); r != nil {
			t.Errorf("%s: answered %x", name, r)
		}
	}
	noQ := append([]byte{}, valid[:12]...)
	noQ[5] = 0 // QDCOUNT 0
	twoQ := append([]byte{}, valid...)
	twoQ[5] = 2
	twoQ = append(twoQ, valid[12:]...)
	cut := valid[:len(valid)-3]
	badPtr := append(append([]byte{}, valid[:12]...), 0xC0, 0x0C, 0, 1, 0, 1) // name pointing at itself
	update := append([]byte{}, noQ...)
	update[2] = 5<<3 | 1 // opcode UPDATE, RD
	if m := parse(t, s.Answer(bc, update, MaxUDPSize)); m.RCode != ni || m.OpCode != 5 {
		t.Errorf("UPDATE without question: %v, opcode %d", m.RCode, m.OpCode)
	}
	for name, tc := range map[string]struct {
		q        []byte
		question bool
	}{
		"no question":     {noQ, false},
		"two questions":   {twoQ, false},
		"cut question":    {cut, false},
		"pointer loop":    {badPtr, false},
		"answer garbage":  {append(append([]byte{}, valid...), 1, 2, 3), true},
		"ancount garbage": {func() []byte { b := append([]byte{}, valid...); b[7] = 1; return b }(), true},
	} {
		r := s.Answer(bc, tc.q, MaxUDPSize)
		m := parse(t, r)
		if name == "answer garbage" { // trailing bytes after the sections are ignored
			if m.RCode != ok {
				t.Errorf("%s: %v", name, m.RCode)
			}
			continue
		}
		if m.RCode != fe || m.ID != 0xbeef || (len(m.Questions) == 1) != tc.question {
			t.Errorf("%s: rcode %v, id %x, %d questions", name, m.RCode, m.ID, len(m.Questions))
		}
	}
}

func TestResolveMode(t *testing.T) {
	f := newFake()
	s := newServer(t, Options{Mode: ModeResolve, Resolver: f})
	runCases(t, s, []tcase{
		{name: "example.com.", typ: A, answer: "93.184.216.34", ttl: 60},
		{name: "Example.COM.", typ: A, answer: "93.184.216.34"},
		{name: "example.com.", typ: AAAA},
		{name: "v6only.example.", typ: AAAA, answer: "2001:db8::1"},
		{name: "v6only.example.", typ: A},
		{name: "nosuch.example.", typ: A, rcode: nx},
		{name: "nosuch.example.", typ: AAAA, rcode: nx},
		{name: "evil.example.", typ: A, rcode: nx}, // resolved into a stand-in range
		{name: "abc.onion.", typ: A, answer: "127.42.42.1"},
		{name: "abc.onion.", typ: AAAA, answer: "fd74:6f72:736b::1"},
		{name: "1.42.42.127.in-addr.arpa.", typ: PTR, answer: "abc.onion."},
		{name: "8.8.8.8.in-addr.arpa.", typ: PTR, answer: "dns.google."},
		{name: "localhost.", typ: A, answer: "127.0.0.1"},
		{name: "example.com.", typ: dnsmessage.TypeMX},
	})
	// example.com, v6only, nosuch, evil, 8.8.8.8: each asked once.
	if n := f.calls.Load(); n != 5 {
		t.Fatalf("%d resolver calls, want 5", n)
	}
	if l := s.StandIn(netip.MustParseAddr("127.192.0.1")); l.InRange || l.Name != "" {
		t.Fatal("map range used in resolve mode")
	}
}

func TestResolveFailures(t *testing.T) {
	f := newFake()
	f.down = true
	s := newServer(t, Options{Mode: ModeResolve, Resolver: f})
	for range 2 {
		if m := ask(t, s, "example.com.", A, qopt{}); m.RCode != sf {
			t.Fatalf("Tor down: %v", m.RCode)
		}
		if m := ask(t, s, "8.8.8.8.in-addr.arpa.", PTR, qopt{}); m.RCode != sf {
			t.Fatalf("PTR, Tor down: %v", m.RCode)
		}
	}
	if n := f.calls.Load(); n != 4 {
		t.Fatalf("failures cached: %d calls, want 4", n)
	}
	if _, err := New(Options{Mode: ModeResolve}); err == nil {
		t.Fatal("resolve mode without a resolver accepted")
	}
	if _, err := New(Options{Mode: "bogus", Resolver: f}); err == nil {
		t.Fatal("bogus mode accepted")
	}
	on, _ := standin.New(netip.MustParsePrefix("127.192.1.0/24"))
	if _, err := New(Options{Onion: on, ReadHosts: noHosts}); err == nil {
		t.Fatal("overlapping onion and map ranges accepted")
	}
}

func noHosts() ([]byte, error) { return nil, nil }

func TestCacheExpiryAndSize(t *testing.T) {
	f := newFake()
	f.addrs["a.example"] = netip.MustParseAddr("192.0.2.1")
	f.addrs["b.example"] = netip.MustParseAddr("192.0.2.2")
	s := newServer(t, Options{Mode: ModeResolve, Resolver: f, CacheSize: 2, CacheTTL: 30 * time.Second})
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	s.cache.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	ask(t, s, "example.com.", A, qopt{})
	advance(20 * time.Second)
	m := ask(t, s, "example.com.", A, qopt{})
	if m.Answers[0].Header.TTL != 10 || f.calls.Load() != 1 {
		t.Fatalf("TTL %d (want the 10 s left), calls %d", m.Answers[0].Header.TTL, f.calls.Load())
	}
	advance(11 * time.Second)
	ask(t, s, "example.com.", A, qopt{})
	if f.calls.Load() != 2 {
		t.Fatalf("expired entry used: calls %d", f.calls.Load())
	}
	// NXDOMAIN is cached for 10 s only.
	ask(t, s, "nosuch.example.", A, qopt{})
	ask(t, s, "nosuch.example.", A, qopt{})
	if f.calls.Load() != 3 {
		t.Fatalf("NXDOMAIN not cached: calls %d", f.calls.Load())
	}
	advance(11 * time.Second)
	ask(t, s, "nosuch.example.", A, qopt{})
	if f.calls.Load() != 4 {
		t.Fatalf("NXDOMAIN cached too long: calls %d", f.calls.Load())
	}
	// Size 2: example.com, nosuch are in; a and b push them out.
	ask(t, s, "a.example.", A, qopt{})
	ask(t, s, "b.example.", A, qopt{})
	ask(t, s, "example.com.", A, qopt{})
	if f.calls.Load() != 7 {
		t.Fatalf("LRU: calls %d, want 7", f.calls.Load())
	}
}

func TestSingleFlight(t *testing.T) {
	f := newFake()
	f.block = make(chan struct{})
	s := newServer(t, Options{Mode: ModeResolve, Resolver: f})
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	waiting := make(chan struct{}, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := waitSpy{Context: context.Background(), waiting: waiting, once: new(sync.Once)}
			resp := s.Answer(ctx, buildQuery(t, "example.com.", A, qopt{id: uint16(i + 1)}), MaxUDPSize)
			var m dnsmessage.Message
			if err := m.Unpack(resp); err != nil || m.ID != uint16(i+1) || len(m.Answers) != 1 {
				errs <- fmt.Errorf("query %d: %v %+v", i, err, m.Header)
			}
		}()
	}
	// Release the lookup once every query waits for it: one that came later would be answered
	// from the cache and prove nothing about the single flight.
	for range n {
		select {
		case <-waiting:
		case <-time.After(30 * time.Second): // only keeps a broken server from hanging the test
			t.Fatal("the queries never waited for the lookup in flight")
		}
	}
	close(f.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c := f.calls.Load(); c != 1 {
		t.Fatalf("%d resolver calls for %d concurrent identical queries", c, n)
	}
}

// waitSpy is a query's context that reports, once, that the query waits: a waiter for a lookup
// in flight asks its context for Done when it joins the flight (cache.do).
type waitSpy struct {
	context.Context
	waiting chan<- struct{}
	once    *sync.Once
}

func (w waitSpy) Done() <-chan struct{} {
	w.once.Do(func() { w.waiting <- struct{}{} })
	return w.Context.Done()
}

func TestCancelledWaiterDoesNotFailOthers(t *testing.T) {
	f := newFake()
	f.block = make(chan struct{})
	s := newServer(t, Options{Mode: ModeResolve, Resolver: f})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan dnsmessage.Message)
	go func() {
		done <- parse(t, s.Answer(ctx, buildQuery(t, "example.com.", A, qopt{}), MaxUDPSize))
	}()
	for f.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	other := make(chan dnsmessage.Message)
	go func() {
		other <- parse(t, s.Answer(context.Background(), buildQuery(t, "example.com.", A, qopt{}), MaxUDPSize))
	}()
	cancel()
	if m := <-done; m.RCode != sf {
		t.Fatalf("cancelled query: %v", m.RCode)
	}
	close(f.block)
	if m := <-other; answerOf(t, m) != "93.184.216.34" {
		t.Fatalf("other waiter: %v %v", m.RCode, m.Answers)
	}
}

func TestStandIn(t *testing.T) {
	s := newServer(t, Options{})
	m := ask(t, s, "example.com.", A, qopt{})
	a := netip.MustParseAddr(answerOf(t, m))
	l := s.StandIn(a)
	if !l.InRange || l.Name != "example.com" {
		t.Fatalf("StandIn(%v) = %+v", a, l)
	}
	l.Release()
	l.Release()
	if l := s.StandIn(netip.MustParseAddr("127.192.77.1")); !l.InRange || l.Name != "" || l.Release == nil {
		t.Fatal("unallocated stand-in")
	}
	if l := s.StandIn(netip.MustParseAddr("127.42.42.0")); !l.InRange {
		t.Fatal("onion network address is not in the onion range")
	}
	if l := s.StandIn(netip.MustParseAddr("203.0.113.10")); l.InRange || l.Name != "" || l.Release == nil {
		t.Fatal("real address is a stand-in")
	}
	m = ask(t, s, "abc.onion.", AAAA, qopt{})
	if l := s.StandIn(netip.MustParseAddr(answerOf(t, m))); l.Name != "abc.onion" {
		t.Fatalf("onion AAAA stand-in: %q", l.Name)
	} else {
		l.Release()
	}
}

func TestFullTableIsServfail(t *testing.T) {
	on, err := standin.New(netip.MustParsePrefix("127.42.42.0/30"))
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, Options{Onion: on})
	var rels []func()
	for _, n := range []string{"a.onion.", "b.onion."} {
		m := ask(t, s, n, A, qopt{})
		l := s.StandIn(netip.MustParseAddr(answerOf(t, m)))
		if l.Name == "" {
			t.Fatal("StandIn failed")
		}
		rels = append(rels, l.Release)
	}
	if m := ask(t, s, "c.onion.", A, qopt{}); m.RCode != sf {
		t.Fatalf("full onion range: %v", m.RCode)
	}
	rels[0]()
	if m := ask(t, s, "c.onion.", A, qopt{}); answerOf(t, m) != "127.42.42.1" {
		t.Fatalf("released entry not reused: %v", m.Answers)
	}
	rels[1]()
}

// TestStorm sends many queries from many goroutines to both modes.
func TestStorm(t *testing.T) {
	f := newFake()
	for i := range 50 {
		f.addrs[fmt.Sprintf("host%d.example", i)] = netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
	}
	on, _ := standin.New(netip.MustParsePrefix("127.42.42.0/28"))
	servers := []*Server{
		newServer(t, Options{Resolver: f, Onion: on}),
		newServer(t, Options{Mode: ModeResolve, Resolver: f, CacheSize: 16}),
	}
	types := []dnsmessage.Type{A, AAAA, PTR, dnsmessage.TypeMX, dnsmessage.TypeHTTPS}
	const workers = 32
	per := 1000
	if testing.Short() {
		per = 100
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for i := range per {
				s := servers[r.IntN(len(servers))]
				typ := types[r.IntN(len(types))]
				var name string
				switch r.IntN(4) {
				case 0:
					name = fmt.Sprintf("Host%d.example.", r.IntN(60))
				case 1:
					name = fmt.Sprintf("n%d.onion.", r.IntN(30))
				case 2:
					name = fmt.Sprintf("%d.0.192.127.in-addr.arpa.", r.IntN(20))
				default:
					name = fmt.Sprintf("%d.42.42.127.in-addr.arpa.", r.IntN(20))
				}
				id := uint16(0x8000 | w<<10 | i&1023) // never 0 (buildQuery default)
				resp := s.Answer(context.Background(), buildQuery(t, name, typ, qopt{id: id}), MaxUDPSize)
				var m dnsmessage.Message
				if err := m.Unpack(resp); err != nil || !m.Response || m.ID != id {
					t.Errorf("%s %v: %v %+v", name, typ, err, m.Header)
					return
				}
				if len(m.Answers) == 1 && typ == A {
					a := netip.AddrFrom4(m.Answers[0].Body.(*dnsmessage.AResource).A)
					if l := s.StandIn(a); l.Name != "" {
						l.Release()
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestTCPFraming(t *testing.T) {
	var buf bytes.Buffer
	msgs := [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{7}, 65535)}
	for _, m := range msgs {
		if err := WriteTCPMessage(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range msgs {
		got, err := ReadTCPMessage(&buf)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, %v", len(got), err)
		}
	}
	if _, err := ReadTCPMessage(&buf); err != io.EOF {
		t.Fatalf("at end: %v", err)
	}
	if _, err := ReadTCPMessage(bytes.NewReader([]byte{0, 5, 1, 2})); err != io.ErrUnexpectedEOF {
		t.Fatalf("short message: %v", err)
	}
	if err := WriteTCPMessage(&buf, make([]byte, 65536)); err == nil {
		t.Fatal("oversized message written")
	}
}

func TestParseReverse(t *testing.T) {
	for name, want := range map[string]string{
		"4.3.2.1.in-addr.arpa":   "1.2.3.4",
		"0.0.0.0.in-addr.arpa":   "0.0.0.0",
		"255.3.2.1.in-addr.arpa": "1.2.3.255",
		"256.3.2.1.in-addr.arpa": "",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa": "2001:db8::1",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.ip6.arpa":   "",
		"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa": "",
		"in-addr.arpa": "",
	} {
		a, okR := parseReverse(name)
		if got := map[bool]string{true: a.String(), false: ""}[okR]; got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// AnswerNow answers what needs no waiting, exactly as Answer does, and gives up, changing nothing
// and calling no Resolver, where Answer would wait: a Tor lookup not in the cache, a full table
// that must be reclaimed first.
func TestAnswerNow(t *testing.T) {
	f := newFake()
	s := newServer(t, Options{Mode: ModeResolve, Resolver: f})
	now := func(name string, typ dnsmessage.Type) ([]byte, bool) {
		return s.AnswerNow(buildQuery(t, name, typ, qopt{}), MaxUDPSize)
	}
	for _, q := range []struct {
		name string
		typ  dnsmessage.Type
	}{{"localhost.", A}, {"abc.onion.", A}, {"abc.onion.", AAAA}, {"example.com.", dnsmessage.TypeMX}, {"bad_name!.example.", A}, {"single.", A}} {
		r, ok := now(q.name, q.typ)
		if !ok || !bytes.Equal(r, s.Answer(context.Background(), buildQuery(t, q.name, q.typ, qopt{}), MaxUDPSize)) {
			t.Errorf("%s %v: AnswerNow %v, not Answer's answer", q.name, q.typ, ok)
		}
	}
	// Not cached: given up, nothing asked; then cached: answered at once.
	for _, q := range []struct {
		name string
		typ  dnsmessage.Type
	}{{"example.com.", A}, {"8.8.8.8.in-addr.arpa.", PTR}} {
		if r, ok := now(q.name, q.typ); ok || r != nil {
			t.Fatalf("%s: a lookup through Tor answered now (%v)", q.name, ok)
		}
		if n := f.calls.Load(); n != 0 {
			t.Fatalf("%s: AnswerNow called the resolver (%d)", q.name, n)
		}
	}
	ask(t, s, "example.com.", A, qopt{})
	r, ok := now("example.com.", A)
	if !ok || answerOf(t, parse(t, r)) != "93.184.216.34" {
		t.Fatalf("cached name not answered now: %v", ok)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d resolver calls, want 1", n)
	}

	// A full table: Answer reclaims (and then answers), AnswerNow gives up without reclaiming.
	on, err := standin.New(netip.MustParsePrefix("127.42.42.0/30"))
	if err != nil {
		t.Fatal(err)
	}
	var reclaims atomic.Int64
	var rels []func()
	full := newServer(t, Options{Onion: on, Reclaim: func() {
		reclaims.Add(1)
		for _, r := range rels {
			r()
		}
		rels = nil
	}})
	for _, n := range []string{"a.onion.", "b.onion."} {
		m := ask(t, full, n, A, qopt{})
		rels = append(rels, full.StandIn(netip.MustParseAddr(answerOf(t, m))).Release)
	}
	if r, ok := full.AnswerNow(buildQuery(t, "c.onion.", A, qopt{}), MaxUDPSize); ok || r != nil || reclaims.Load() != 0 {
		t.Fatalf("full table: AnswerNow answered %v, %d reclaims", ok, reclaims.Load())
	}
	if m := ask(t, full, "c.onion.", A, qopt{}); answerOf(t, m) == "" || reclaims.Load() != 1 {
		t.Fatalf("full table: Answer gave %v after %d reclaims", m.Answers, reclaims.Load())
	}
}
