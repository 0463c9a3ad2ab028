// Package socks5 speaks the client side of SOCKS5 (RFC 1928), its username/password
// sub-negotiation (RFC 1929) and Tor's RESOLVE and RESOLVE_PTR extensions, over any
// io.ReadWriter, byte for byte the way torsocks does. It opens no sockets itself.
package socks5

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Version is the SOCKS protocol version byte.
const Version byte = 0x05

// Commands (RFC 1928 CONNECT and Tor's extensions).
const (
	CmdConnect    byte = 0x01
	CmdResolve    byte = 0xF0
	CmdResolvePTR byte = 0xF1
)

// Authentication methods.
const (
	MethodNoAuth       byte = 0x00
	MethodUserPass     byte = 0x02
	MethodNoAcceptable byte = 0xFF
)

// Address types.
const (
	AtypIPv4   byte = 0x01
	AtypDomain byte = 0x03
	AtypIPv6   byte = 0x04
)

// Reply codes of RFC 1928, plus Tor's extended onion-service codes.
const (
	ReplySucceeded              byte = 0x00
	ReplyGeneralFailure         byte = 0x01
	ReplyNotAllowed             byte = 0x02
	ReplyNetworkUnreachable     byte = 0x03
	ReplyHostUnreachable        byte = 0x04
	ReplyConnectionRefused      byte = 0x05
	ReplyTTLExpired             byte = 0x06
	ReplyCommandNotSupported    byte = 0x07
	ReplyAddressNotSupported    byte = 0x08
	ReplyOnionDescNotFound      byte = 0xF0
	ReplyOnionDescInvalid       byte = 0xF1
	ReplyOnionIntroFailed       byte = 0xF2
	ReplyOnionRendezvousFailed  byte = 0xF3
	ReplyOnionMissingClientAuth byte = 0xF4
	ReplyOnionWrongClientAuth   byte = 0xF5
	ReplyOnionInvalidAddress    byte = 0xF6
	ReplyOnionIntroTimedOut     byte = 0xF7
)

// AuthVersion is the version byte of the RFC 1929 sub-negotiation.
const AuthVersion byte = 0x01

// DefaultResolvePort is the dummy port torsocks puts in RESOLVE and RESOLVE_PTR requests.
const DefaultResolvePort uint16 = 42

// Errors. ErrMalformed and ErrInvalidRequest are returned wrapped with detail; test with errors.Is.
var (
	// ErrAuthFailed: the server rejected the RFC 1929 username/password.
	ErrAuthFailed = errors.New("SOCKS5 username/password authentication failed")
	// ErrNoAcceptableMethod: the server answered method 0xFF to the method offered.
	ErrNoAcceptableMethod = errors.New("SOCKS5 server accepted no offered authentication method")
	// ErrMalformed: the server sent bytes that are not valid SOCKS5.
	ErrMalformed = errors.New("malformed SOCKS5 message")
	// ErrInvalidRequest: the caller asked for something that cannot be encoded.
	ErrInvalidRequest = errors.New("invalid SOCKS5 request")
)

// Auth holds RFC 1929 credentials.
type Auth struct {
	Username, Password string
}

// Request is one SOCKS5 request.
type Request struct {
	// Cmd is CmdConnect, CmdResolve or CmdResolvePTR.
	Cmd byte
	// Host is a domain name or an IP literal in text (IPv4 or IPv6, no brackets).
	// For CmdResolvePTR it must be an IP literal.
	Host string
	// Port is the destination port. For the resolve commands zero means DefaultResolvePort.
	Port uint16
}

// ConnectAddr returns the CONNECT request for an IP destination, with the address written
// as torsocks writes it: IPv4-mapped IPv6 addresses unmapped, no zone.
func ConnectAddr(ap netip.AddrPort) Request {
	return Request{Cmd: CmdConnect, Host: ap.Addr().Unmap().WithZone("").String(), Port: ap.Port()}
}

// Reply is a server's reply to a request: the bound address, or for RESOLVE the resolved
// address, or for RESOLVE_PTR the name (ATYP 03, then Name is set and Addr is invalid).
type Reply struct {
	Code byte
	Addr netip.Addr
	Name string
	Port uint16
}

// ReplyError is a reply whose code is not ReplySucceeded.
type ReplyError struct {
	Code byte
}

var replyText = map[byte]string{
	ReplyGeneralFailure:         "general SOCKS server failure",
	ReplyNotAllowed:             "connection not allowed by ruleset",
	ReplyNetworkUnreachable:     "network unreachable",
	ReplyHostUnreachable:        "host unreachable",
	ReplyConnectionRefused:      "connection refused",
	ReplyTTLExpired:             "TTL expired",
	ReplyCommandNotSupported:    "command not supported",
	ReplyAddressNotSupported:    "address type not supported",
	ReplyOnionDescNotFound:      "onion service descriptor can not be found",
	ReplyOnionDescInvalid:       "onion service descriptor is invalid",
	ReplyOnionIntroFailed:       "onion service introduction failed",
	ReplyOnionRendezvousFailed:  "onion service rendezvous failed",
	ReplyOnionMissingClientAuth: "onion service missing client authorization",
	ReplyOnionWrongClientAuth:   "onion service wrong client authorization",
	ReplyOnionInvalidAddress:    "onion service invalid address",
	ReplyOnionIntroTimedOut:     "onion service introduction timed out",
}

// Error returns e.g. "SOCKS5 reply 0x05: connection refused".
func (e *ReplyError) Error() string {
	text, ok := replyText[e.Code]
	if !ok {
		text = "unknown reply code"
	}
	return fmt.Sprintf("SOCKS5 reply 0x%02x: %s", e.Code, text)
}

// AppendGreeting appends the method-selection message offering exactly one method:
// 05 01 00, or 05 01 02 when auth is true.
func AppendGreeting(b []byte, auth bool) []byte {
	m := MethodNoAuth
	if auth {
		m = MethodUserPass
	}
	return append(b, Version, 1, m)
}

// AppendAuth appends the RFC 1929 username/password message: 01 ulen user plen pass.
// Both fields must be 1 to 255 bytes long.
func AppendAuth(b []byte, a Auth) ([]byte, error) {
	if err := checkField("username", a.Username); err != nil {
		return b, err
	}
	if err := checkField("password", a.Password); err != nil {
		return b, err
	}
	b = append(b, AuthVersion, byte(len(a.Username)))
	b = append(b, a.Username...)
	b = append(b, byte(len(a.Password)))
	return append(b, a.Password...), nil
}

func checkField(what, s string) error {
	if len(s) == 0 || len(s) > 255 {
		return fmt.Errorf("%w: %s length %d not in 1..255", ErrInvalidRequest, what, len(s))
	}
	return nil
}

// AppendRequest appends the request message for r:
//
//	CONNECT:     05 01 00 03 len host port   (always ATYP 03; IP literals as text)
//	RESOLVE:     05 F0 00 03 len name port   (port 42 unless r.Port is set)
//	RESOLVE_PTR: 05 F1 00 01 a b c d port    (ATYP 04 and 16 bytes for IPv6; port 42 unless set)
func AppendRequest(b []byte, r Request) ([]byte, error) {
	switch r.Cmd {
	case CmdConnect, CmdResolve:
		if err := checkField("host name", r.Host); err != nil {
			return b, err
		}
		if strings.IndexByte(r.Host, 0) >= 0 {
			return b, fmt.Errorf("%w: host name %q contains a NUL byte", ErrInvalidRequest, r.Host)
		}
		port := r.Port
		if r.Cmd == CmdResolve && port == 0 {
			port = DefaultResolvePort
		}
		b = append(b, Version, r.Cmd, 0, AtypDomain, byte(len(r.Host)))
		b = append(b, r.Host...)
		return append(b, byte(port>>8), byte(port)), nil
	case CmdResolvePTR:
		ip, err := netip.ParseAddr(r.Host)
		if err != nil {
			return b, fmt.Errorf("%w: RESOLVE_PTR needs an IP address: %w", ErrInvalidRequest, err)
		}
		ip = ip.Unmap().WithZone("")
		port := r.Port
		if port == 0 {
			port = DefaultResolvePort
		}
		if ip.Is4() {
			b = append(b, Version, r.Cmd, 0, AtypIPv4)
		} else {
			b = append(b, Version, r.Cmd, 0, AtypIPv6)
		}
		b = append(b, ip.AsSlice()...)
		return append(b, byte(port>>8), byte(port)), nil
	default:
		return b, fmt.Errorf("%w: unknown command 0x%02x", ErrInvalidRequest, r.Cmd)
	}
}

// String describes the request for logs, e.g. "CONNECT example.com:80".
func (r Request) String() string {
	name := "0x" + strconv.FormatUint(uint64(r.Cmd), 16)
	switch r.Cmd {
	case CmdConnect:
		name = "CONNECT"
	case CmdResolve:
		name = "RESOLVE"
	case CmdResolvePTR:
		name = "RESOLVE_PTR"
	}
	host := r.Host
	if strings.IndexByte(host, ':') >= 0 {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s %s:%d", name, host, r.Port)
}
