package socks5test

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// record is what a test server saw (connections' remote addresses, datagrams' senders), in
// order, and the fences of its Sync: the part Sink and UDPCanary share.
type record[T any] struct {
	key    func(T) string // identifies a fence
	mu     sync.Mutex
	cond   *sync.Cond
	seen   []T
	fences map[string]bool
	closed bool
}

func newRecord[T any](key func(T) string) *record[T] {
	r := &record[T]{key: key, fences: map[string]bool{}}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// add records v; it reports whether v is a fence already announced and whether the record is
// closed.
func (r *record[T]) add(v T) (fence, closed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, v)
	r.cond.Broadcast()
	return r.fences[r.key(v)], r.closed
}

// close wakes every waiter for good.
func (r *record[T]) close() {
	r.mu.Lock()
	r.closed = true
	r.cond.Broadcast()
	r.mu.Unlock()
}

// list returns what was seen, fences left out.
func (r *record[T]) list() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listLocked()
}

func (r *record[T]) listLocked() []T {
	var out []T
	for _, v := range r.seen {
		if !r.fences[r.key(v)] {
			out = append(out, v)
		}
	}
	return out
}

// count returns how many were seen, fences left out.
func (r *record[T]) count() int { return len(r.list()) }

// wait waits until at least n were seen (fences left out) or the timeout passes, and reports
// whether they were.
func (r *record[T]) wait(n int, timeout time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	WaitCond(r.cond, timeout, func() bool { return len(r.listLocked()) >= n || r.closed })
	return len(r.listLocked()) >= n
}

// fence marks me, the key of what the test itself sent, as a fence (left out from now on)
// and waits until it was seen. timeout only keeps a broken server from hanging the test.
func (r *record[T]) fence(me string, timeout time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fences[me] = true
	seen := func() bool {
		return slices.ContainsFunc(r.seen, func(v T) bool { return r.key(v) == me })
	}
	if !WaitCond(r.cond, timeout, func() bool { return seen() || r.closed }) || !seen() {
		return fmt.Errorf("its own %s was not seen within %v", me, timeout)
	}
	return nil
}
