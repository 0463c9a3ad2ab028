package dns

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// result is what a lookup through Tor gave.
type result struct {
	addr netip.Addr // Resolve
	name string     // ResolvePTR
	err  error
}

// cache remembers lookups through Tor (LRU, size entries) and runs concurrent
// identical lookups once (single flight).
//
// cache.mu guards m, lru and calls. It is never held while a lookup runs or
// while a caller waits for one.
type cache struct {
	size        int
	ttl, negTTL time.Duration
	now         func() time.Time

	mu    sync.Mutex
	m     map[string]*list.Element // of *cacheEntry
	lru   list.List                // most recent first
	calls map[string]*call         // lookups in flight
}

type cacheEntry struct {
	key     string
	res     result
	expires time.Time
}

// call is one lookup in flight; res is written before done is closed.
type call struct {
	done chan struct{}
	res  result
}

func newCache(size int, ttl, negTTL time.Duration) *cache {
	return &cache{size: size, ttl: ttl, negTTL: negTTL, now: time.Now,
		m: make(map[string]*list.Element), calls: make(map[string]*call)}
}

// do returns the cached result for key, or runs fn once for every concurrent
// caller asking for key and caches what it returns (success for ttl, ErrNotFound
// for negTTL, other errors not at all). fn runs on its own goroutine with a
// context that no caller's cancellation ends (bounded by lookupTimeout), so a
// caller that gives up does not fail the others; a caller whose ctx ends gets
// ctx's error. Under AnswerNow (mustNotWait) a key without a fresh entry gives
// errWouldWait at once, and nothing runs. ttl is the answer's remaining life in seconds (at least 1).
func (c *cache) do(ctx context.Context, key string, fn func(context.Context) result) (res result, ttl uint32) {
	c.mu.Lock()
	if el, ok := c.m[key]; ok {
		e := el.Value.(*cacheEntry)
		if left := e.expires.Sub(c.now()); left > 0 {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return e.res, seconds(left)
		}
		c.lru.Remove(el)
		delete(c.m, key)
	}
	if mustNotWait(ctx) { // AnswerNow: nothing fresh in the cache, so this would wait
		c.mu.Unlock()
		return result{err: errWouldWait}, 0
	}
	cl, ok := c.calls[key]
	if !ok {
		cl = &call{done: make(chan struct{})}
		c.calls[key] = cl
		go c.run(ctx, key, cl, fn)
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
		return cl.res, seconds(c.ttl)
	case <-ctx.Done():
		return result{err: ctx.Err()}, 0
	}
}

// run performs one lookup for every waiter of cl and stores its result.
func (c *cache) run(ctx context.Context, key string, cl *call, fn func(context.Context) result) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	func() {
		defer func() {
			if r := recover(); r != nil { // a Resolver's bug must not kill the supervisor
				cl.res = result{err: fmt.Errorf("dns: resolver panicked: %v", r)}
			}
		}()
		cl.res = fn(ctx)
	}()
	ttl := c.ttl
	if errors.Is(cl.res.err, ErrNotFound) {
		ttl = c.negTTL
	}
	c.mu.Lock()
	delete(c.calls, key)
	if cl.res.err == nil || errors.Is(cl.res.err, ErrNotFound) {
		if el, ok := c.m[key]; ok {
			c.lru.Remove(el)
		}
		c.m[key] = c.lru.PushFront(&cacheEntry{key: key, res: cl.res, expires: c.now().Add(ttl)})
		for c.lru.Len() > c.size {
			delete(c.m, c.lru.Remove(c.lru.Back()).(*cacheEntry).key)
		}
	}
	c.mu.Unlock()
	close(cl.done)
}

// seconds rounds d up to whole seconds, at least 1.
func seconds(d time.Duration) uint32 {
	return uint32(max(1, (d+time.Second-1)/time.Second))
}
