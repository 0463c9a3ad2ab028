package bench

import (
	"net"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// nameserver answers every A query sent to the test nameserver (UDP) with the destination host.
func nameserver(t *testing.T) (stop func()) {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(netnstest.NameserverV4.String(), "53"))
	if err != nil {
		t.Fatalf("nameserver: %v", err)
	}
	go func() {
		buf := make([]byte, 1500)
		for n, from, err := pc.ReadFrom(buf); err == nil; n, from, err = pc.ReadFrom(buf) {
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true, RecursionDesired: h.RecursionDesired})
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if q.Type == dnsmessage.TypeA {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: netnstest.DestV4.As4()})
			}
			if msg, err := b.Finish(); err == nil {
				pc.WriteTo(msg, from)
			}
		}
	}()
	return func() { pc.Close() }
}
