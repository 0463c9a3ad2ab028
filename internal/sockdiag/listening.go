package sockdiag

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// tcpListen is TCP_LISTEN (include/net/tcp_states.h).
const tcpListen = 10

// listenSeq numbers the dumps of ListeningTCPCookies, so that an answer to an earlier dump
// left on a kept socket is recognised as stale.
var listenSeq atomic.Uint32

// ListeningTCPCookies returns the SO_COOKIE of every listening TCP socket (IPv4 and IPv6) of
// the network namespace of nl, a NETLINK_SOCK_DIAG socket made there (sock_diag answers about
// the namespace its socket lives in, whoever holds it). Calls on one nl must not overlap.
// The dump walks only the listening sockets. As with LiveTCPCookies, a dump is not atomic:
// callers that must not miss a live listener take the union of two dumps.
func ListeningTCPCookies(nl int) (map[uint64]struct{}, error) {
	set := make(map[uint64]struct{})
	buf := make([]byte, recvBufSize)
	for _, family := range [...]uint8{unix.AF_INET, unix.AF_INET6} {
		if err := dump(nl, family, unix.IPPROTO_TCP, query{states: 1 << tcpListen}, listenSeq.Add(1), buf, set); err != nil {
			return nil, err
		}
	}
	return set, nil
}
