package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"

	"golang.org/x/net/dns/dnsmessage"
)

// rcodeBADVERS is EDNS's extended RCODE 16 (RFC 6891): upper 8 bits in the OPT
// record's TTL, lower 4 (0) in the header.
const rcodeBADVERS = 16

// Answer returns the response to one DNS query message, as received over UDP
// or, without its 2-byte length, over TCP.
//
// maxSize is the transport's limit without EDNS: MaxUDPSize (512) for UDP,
// MaxTCPSize (65535) for TCP. For a limit below 65535, an OPT record in the
// query raises it to the size the query announces, at least 512 and at most
// 4096. When the response does not fit, its answers are left out and TC is set
// (a resolver then asks again over TCP).
//
// A message that cannot be a query (shorter than a header, or with QR set) gets
// nil: drop it. A query with problems gets an error response (FORMERR, NOTIMP,
// BADVERS). Answer never panics; it may block for a Resolver call until ctx
// ends (resolve mode, PTR of real addresses).
func (s *Server) Answer(ctx context.Context, query []byte, maxSize int) (resp []byte) {
	defer func() {
		if r := recover(); r != nil {
			s.logf("DNS: internal error answering a query (dropped): %v", r)
			resp = nil
		}
	}()
	return s.answer(ctx, query, maxSize)
}

// AnswerNow is Answer when the answer needs nothing to wait for: map mode and .onion stand-ins,
// local and /etc/hosts names, errors, other types, and results of Tor lookups still in the cache.
// Where Answer would wait (a lookup through Tor, a full stand-in table whose closed connections
// must be reclaimed first) it gives up with ok false, having changed nothing, and the caller
// calls Answer where waiting does no harm. It lets the responder answer on the goroutine that
// read the query (dnsserver.NowAnswerer).
func (s *Server) AnswerNow(query []byte, maxSize int) (resp []byte, ok bool) {
	st := &nowState{}
	resp = s.Answer(context.WithValue(context.Background(), nowKey{}, st), query, maxSize)
	if st.wouldWait {
		return nil, false
	}
	return resp, true
}

// nowKey is the context key of AnswerNow's *nowState.
type nowKey struct{}

// nowState is AnswerNow's: wouldWait is set where Answer would have waited (and did not). Only
// the goroutine running AnswerNow touches it.
type nowState struct{ wouldWait bool }

// mustNotWait reports whether the query is answered by AnswerNow, and if so marks it as one that
// would wait: the caller then gives up at once.
func mustNotWait(ctx context.Context) bool {
	st, _ := ctx.Value(nowKey{}).(*nowState)
	if st != nil {
		st.wouldWait = true
	}
	return st != nil
}

// errWouldWait is the result of a lookup AnswerNow gave up (never seen outside the package).
var errWouldWait = errors.New("dns: the answer would wait")

// response holds what goes into a response message.
type response struct {
	hdr   dnsmessage.Header
	q     *dnsmessage.Question
	ans   []record
	rcode int  // full RCODE: 12 bits with EDNS (BADVERS is 16), else 4
	edns  bool // add an OPT record
}

func (s *Server) answer(ctx context.Context, query []byte, maxSize int) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	r := response{hdr: dnsmessage.Header{
		ID:                 h.ID,
		Response:           true,
		OpCode:             h.OpCode,
		RecursionDesired:   h.RecursionDesired,
		RecursionAvailable: true,
	}}
	limit := maxSize
	fail := func(rc dnsmessage.RCode) []byte {
		if h.OpCode != 0 { // another opcode's message may have other sections: NOTIMP whatever they hold
			rc = dnsmessage.RCodeNotImplemented
		}
		r.rcode = int(rc)
		return r.build(limit)
	}

	var qs []dnsmessage.Question
	for {
		q, err := p.Question()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return fail(dnsmessage.RCodeFormatError)
		}
		if qs = append(qs, q); len(qs) > 1 {
			return fail(dnsmessage.RCodeFormatError)
		}
	}
	if len(qs) != 1 {
		return fail(dnsmessage.RCodeFormatError)
	}
	r.q = &qs[0]
	if p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		return fail(dnsmessage.RCodeFormatError)
	}
	var opt *dnsmessage.ResourceHeader
	for {
		ah, err := p.AdditionalHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return fail(dnsmessage.RCodeFormatError)
		}
		if ah.Type == dnsmessage.TypeOPT {
			if opt != nil { // RFC 6891 6.1.1: more than one OPT is FORMERR
				return fail(dnsmessage.RCodeFormatError)
			}
			opt = &ah
		}
		if p.SkipAdditional() != nil {
			return fail(dnsmessage.RCodeFormatError)
		}
	}
	if opt != nil {
		r.edns = true
		if limit < MaxTCPSize {
			limit = max(limit, min(max(int(opt.Class), 512), maxEDNSSize))
		}
		if version := opt.TTL >> 16 & 0xff; version != 0 {
			r.rcode = rcodeBADVERS
			return r.build(limit)
		}
	}
	if h.OpCode != 0 {
		return fail(dnsmessage.RCodeNotImplemented)
	}
	if r.q.Class != dnsmessage.ClassINET {
		return fail(dnsmessage.RCodeNotImplemented)
	}
	rep := s.resolve(ctx, *r.q)
	r.rcode, r.ans = int(rep.rcode), rep.ans
	return r.build(limit)
}

// build packs the response. If it does not fit in limit it is packed again
// without answers and with TC set; if even that does not fit, without the
// question and the OPT record (a bare header, whatever the limit).
func (r *response) build(limit int) []byte {
	b, err := r.pack()
	if err == nil && len(b) <= limit {
		return b
	}
	if err != nil { // should not happen: the question was parsed from the wire
		r.rcode = int(dnsmessage.RCodeServerFailure)
	} else {
		r.hdr.Truncated = true
	}
	if len(r.ans) > 0 {
		r.ans = nil
		if b, err = r.pack(); err == nil && len(b) <= limit {
			return b
		}
	}
	r.q, r.edns = nil, false
	b, _ = r.pack()
	return b
}

func (r *response) pack() ([]byte, error) {
	hdr := r.hdr
	hdr.RCode = dnsmessage.RCode(r.rcode & 0xf)
	if !r.edns && r.rcode > 15 {
		hdr.RCode = dnsmessage.RCodeServerFailure
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 128), hdr)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if r.q != nil {
		if err := b.Question(*r.q); err != nil {
			return nil, err
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range r.ans {
		rh := dnsmessage.ResourceHeader{Name: r.q.Name, Class: dnsmessage.ClassINET, TTL: a.ttl}
		var err error
		switch {
		case a.ptr != "":
			var n dnsmessage.Name
			if n, err = dnsmessage.NewName(a.ptr + "."); err == nil {
				err = b.PTRResource(rh, dnsmessage.PTRResource{PTR: n})
			}
		case a.addr.Is4():
			err = b.AResource(rh, dnsmessage.AResource{A: a.addr.As4()})
		default:
			err = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.addr.As16()})
		}
		if err != nil {
			return nil, err
		}
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	if r.edns {
		var rh dnsmessage.ResourceHeader
		if err := rh.SetEDNS0(maxEDNSSize, dnsmessage.RCode(r.rcode), false); err != nil {
			return nil, err
		}
		if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// ReadTCPMessage reads one DNS message framed for TCP (RFC 1035 4.2.2: a 2-byte
// big-endian length, then the message).
func ReadTCPMessage(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return msg, nil
}

// WriteTCPMessage writes msg framed for TCP, in one Write.
func WriteTCPMessage(w io.Writer, msg []byte) error {
	if len(msg) > MaxTCPSize {
		return errors.New("dns: message longer than 65535 bytes")
	}
	b := make([]byte, 2, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	b = append(b, msg...)
	n, err := w.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	return err
}
