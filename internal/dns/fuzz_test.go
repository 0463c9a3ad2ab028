package dns

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gotorsocks/torsocks/internal/standin"
	"golang.org/x/net/dns/dnsmessage"
)

// FuzzAnswer feeds random and mutated queries to a map mode and a resolve mode
// server (small onion range, so reuse and full tables happen). Answer must
// never panic (the internal answer is fuzzed, without Answer's recover), and any
// response must parse, have QR set, carry the query's ID and respect the size
// limit.
func FuzzAnswer(f *testing.F) {
	for _, seed := range []struct {
		name string
		typ  dnsmessage.Type
		o    qopt
	}{
		{"example.com.", A, qopt{}},
		{"Example.COM.", AAAA, qopt{edns: 1232}},
		{"abc.onion.", A, qopt{}},
		{"abc.onion.", AAAA, qopt{edns: 4096}},
		{"1.42.42.127.in-addr.arpa.", PTR, qopt{}},
		{"8.8.8.8.in-addr.arpa.", PTR, qopt{}},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.b.6.3.7.2.7.f.6.4.7.d.f.ip6.arpa.", PTR, qopt{}},
		{"localhost.", A, qopt{}},
		{"myhost.", A, qopt{}},
		{"example.com.", dnsmessage.TypeMX, qopt{}},
		{"example.com.", dnsmessage.TypeHTTPS, qopt{edns: 1232, ednsVer: 1}},
		{"example.com.", A, qopt{class: dnsmessage.ClassCHAOS}},
		{"example.com.", A, qopt{opcode: 4}},
		{"example.com.", A, qopt{edns: 512, twoOPT: true}},
		{"nosuch.example.", A, qopt{}},
		{"intranet.", A, qopt{}},
	} {
		q := buildQuery(f, seed.name, seed.typ, seed.o)
		f.Add(q, uint16(512))
		f.Add(q, uint16(30))
		f.Add(q, uint16(65535))
	}
	f.Add([]byte{}, uint16(512))
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1}, uint16(512))

	on, err := standin.New(netip.MustParsePrefix("127.42.42.0/29"))
	if err != nil {
		f.Fatal(err)
	}
	hosts := func() ([]byte, error) { return []byte(testHosts), nil }
	mapS, err := New(Options{Onion: on, Resolver: newFake(), ReadHosts: hosts})
	if err != nil {
		f.Fatal(err)
	}
	resS, err := New(Options{Mode: ModeResolve, Resolver: newFake(), ReadHosts: hosts, CacheSize: 8})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, q []byte, maxSize uint16) {
		for _, s := range []*Server{mapS, resS} {
			resp := s.answer(context.Background(), q, int(maxSize))
			if resp == nil {
				continue
			}
			if len(q) < 12 {
				t.Fatalf("answered a %d-byte message", len(q))
			}
			var m dnsmessage.Message
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("response does not parse: %v\nquery %x\nresp %x", err, q, resp)
			}
			if !m.Response || m.ID != binary.BigEndian.Uint16(q) {
				t.Fatalf("header %+v for query ID %x", m.Header, q[:2])
			}
			if limit := max(int(maxSize), 4096, 12); len(resp) > limit {
				t.Fatalf("%d-byte response for maxSize %d", len(resp), maxSize)
			}
			if len(resp) > 12 && int(maxSize) >= 12 && len(resp) > int(maxSize) && len(m.Additionals) == 0 {
				t.Fatalf("%d-byte response over maxSize %d without EDNS", len(resp), maxSize)
			}
		}
	})
}
