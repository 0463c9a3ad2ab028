package supervisor

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestSockCacheMatchesKernel: for every socket() the cache records, what it says is what the
// kernel says of a socket made with those arguments; the others are not recorded.
func TestSockCacheMatchesKernel(t *testing.T) {
	for _, domain := range []int{unix.AF_INET, unix.AF_INET6} {
		for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_RAW} {
			for _, flags := range []int{0, unix.SOCK_NONBLOCK, unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK} {
				for _, proto := range []int{0, unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_MPTCP, unix.IPPROTO_ICMP} {
					fd, err := unix.Socket(domain, typ|flags, proto)
					if err != nil {
						continue // not a valid combination, or not allowed here
					}
					var sc sockCache
					sc.put(fd, domain, typ|flags, proto)
					want, err := readSockInfo(fd, false, 0)
					if err != nil {
						t.Fatal(err)
					}
					got, ok := sc.get(want.cookie)
					unix.Close(fd)
					if !ok {
						if (typ == unix.SOCK_STREAM && (proto == 0 || proto == unix.IPPROTO_TCP)) ||
							(typ == unix.SOCK_DGRAM && (proto == 0 || proto == unix.IPPROTO_UDP)) {
							t.Errorf("socket(%d, %#x, %d) not recorded", domain, typ|flags, proto)
						}
						continue
					}
					want.sandbox = true
					if got != want {
						t.Errorf("socket(%d, %#x, %d): cache says %+v, kernel %+v", domain, typ|flags, proto, got, want)
					}
				}
			}
		}
	}
}

// TestSockCacheBound: the cache holds at most two generations, and an entry used in the old
// one moves to the new one.
func TestSockCacheBound(t *testing.T) {
	var sc sockCache
	for i := uint64(1); i <= 3*sockCacheGen; i++ {
		sc.mu.Lock()
		sc.add(sockInfo{cookie: i})
		sc.mu.Unlock()
		if i == 2*sockCacheGen+sockCacheGen/2 {
			if _, ok := sc.get(sockCacheGen + 1); !ok { // in the old generation now
				t.Fatal("entry of the previous generation lost")
			}
		}
	}
	if n := len(sc.cur) + len(sc.old); n > 2*sockCacheGen {
		t.Fatalf("%d entries, more than %d", n, 2*sockCacheGen)
	}
	if _, ok := sc.get(1); ok {
		t.Fatal("the oldest entry was kept")
	}
	if _, ok := sc.get(sockCacheGen + 1); !ok {
		t.Fatal("an entry in use was evicted")
	}
}
