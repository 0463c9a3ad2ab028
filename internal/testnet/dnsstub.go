package testnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSStub is a tiny authoritative DNS server over UDP for tests: the exits'
// resolver (Options.Resolver), or a canary standing in for a program's
// nameserver that records every query it gets.
type DNSStub struct {
	pc    net.PacketConn
	names map[string]netip.Addr
	done  chan struct{}

	mu      sync.Mutex
	queries []DNSQuery
	once    sync.Once
	err     error
}

// DNSQuery is one query a DNSStub received.
type DNSQuery struct {
	From netip.AddrPort
	Name string // lower case, without the final dot
	Type dnsmessage.Type
}

// StartDNSStub serves names over UDP at addr (e.g. "127.0.0.1:5353").
// Keys of names are host names, case-insensitive, with or without the final
// dot; "*.example.test" matches every name under example.test. A and AAAA
// queries of a known name are answered with its address (when of that
// family; otherwise an empty answer), other types get an empty answer, and
// unknown names NXDOMAIN.
func StartDNSStub(addr string, names map[string]netip.Addr) (*DNSStub, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("testnet: DNS stub: %w", err)
	}
	s := &DNSStub{pc: pc, names: map[string]netip.Addr{}, done: make(chan struct{})}
	for k, v := range names {
		s.names[strings.TrimSuffix(strings.ToLower(k), ".")] = v
	}
	go s.serve()
	return s, nil
}

// Addr is the stub's UDP address.
func (s *DNSStub) Addr() net.Addr { return s.pc.LocalAddr() }

// Queries returns every query received so far, in order.
func (s *DNSStub) Queries() []DNSQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.queries)
}

// Close stops the stub and waits for its goroutine.
func (s *DNSStub) Close() error {
	s.once.Do(func() {
		s.err = s.pc.Close()
		<-s.done
	})
	return s.err
}

// lookup returns the address of name (lower case, no final dot).
func (s *DNSStub) lookup(name string) (netip.Addr, bool) {
	if a, ok := s.names[name]; ok {
		return a, true
	}
	for n := name; ; {
		_, parent, ok := strings.Cut(n, ".")
		if !ok {
			return netip.Addr{}, false
		}
		if a, ok := s.names["*."+parent]; ok {
			return a, true
		}
		n = parent
	}
}

func (s *DNSStub) serve() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		nr, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if msg := s.answer(buf[:nr], from); msg != nil {
			s.pc.WriteTo(msg, from)
		}
	}
}

// answer builds the reply to one query, or nil to drop it.
func (s *DNSStub) answer(query []byte, from net.Addr) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
	if ua, ok := from.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		s.mu.Lock()
		s.queries = append(s.queries, DNSQuery{From: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), Name: name, Type: q.Type})
		s.mu.Unlock()
	}
	a, known := s.lookup(name)
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
	switch {
	case known && q.Type == dnsmessage.TypeA && a.Is4():
		b.AResource(rr, dnsmessage.AResource{A: a.As4()})
	case known && q.Type == dnsmessage.TypeAAAA && a.Is6() && !a.Is4In6():
		b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
	}
	msg, err := b.Finish()
	if err != nil {
		return nil
	}
	return msg
}
