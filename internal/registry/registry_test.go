package registry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var testAddr = netip.MustParseAddr("203.0.113.10")

// counted returns a connection whose release counts into *released.
func counted(cookie uint64, released *atomic.Int64) *Conn {
	return NewConn(cookie, netip.AddrPortFrom(testAddr, 80), "", func() { released.Add(1) })
}

func (c *Conn) refcount() int32 { return c.refs.Load() }

// mustPanic runs f and fails the test unless it panics.
func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}

func TestNewConn(t *testing.T) {
	dest := netip.MustParseAddrPort("[2001:db8::10]:443")
	c := NewConn(7, dest, "example.onion", nil)
	if c.Cookie != 7 || c.Dest != dest || c.Host != "example.onion" {
		t.Fatalf("fields: %+v", c)
	}
	if c.refcount() != 1 { // add 2) refcount = 1
		t.Fatalf("refcount %d, want 1", c.refcount())
	}
	c.Put() // nil release: nothing to run
	mustPanic(t, "Put below 0", c.Put)
}

func TestAdd(t *testing.T) {
	r := New()
	var released atomic.Int64
	c := counted(1, &released)
	if err := r.Add(c); err != nil { // add 1) - 4)
		t.Fatal(err)
	}
	if r.Len() != 1 || r.Generation() != 1 {
		t.Fatalf("Len %d, Generation %d", r.Len(), r.Generation())
	}
	if c.refcount() != 1 {
		t.Fatalf("Add changed the refcount to %d: the registry takes over NewConn's reference", c.refcount())
	}
	// Duplicate: refused, registry unchanged, the caller still owns dup.
	dup := counted(1, &released)
	if err := r.Add(dup); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate Add: %v", err)
	}
	if got := r.Lookup(1); got != c {
		t.Fatal("duplicate Add replaced the entry")
	} else {
		got.Put()
	}
	if r.Len() != 1 || r.Generation() != 1 {
		t.Fatalf("after refused Add: Len %d, Generation %d", r.Len(), r.Generation())
	}
	dup.Put()
	if released.Load() != 1 {
		t.Fatal("refused connection's Put did not release it")
	}
	mustPanic(t, "Add of a released connection", func() { r.Add(dup) })
}

func TestLookup(t *testing.T) {
	r := New()
	if r.Lookup(9) != nil {
		t.Fatal("Lookup in an empty registry") // lookup 3) no conn
	}
	var released atomic.Int64
	c := counted(9, &released)
	r.Add(c)
	got := r.Lookup(9) // lookup 1) - 5)
	if got != c || c.refcount() != 2 {
		t.Fatalf("Lookup: %p (want %p), refcount %d (want 2)", got, c, c.refcount())
	}
	again := r.Lookup(9)
	if c.refcount() != 3 {
		t.Fatalf("refcount %d, want 3", c.refcount())
	}
	got.Put() // lookup 7) not 0: no free
	again.Put()
	if c.refcount() != 1 || released.Load() != 0 {
		t.Fatalf("after Puts: refcount %d, released %d", c.refcount(), released.Load())
	}
}

func TestDestroy(t *testing.T) {
	r := New()
	if r.Destroy(5) {
		t.Fatal("Destroy of an absent cookie reported true")
	}
	var released atomic.Int64
	r.Add(counted(5, &released))
	if !r.Destroy(5) { // destroy 1) - 7)
		t.Fatal("Destroy reported false")
	}
	if released.Load() != 1 {
		t.Fatalf("registry held the last reference: released %d times, want 1", released.Load())
	}
	if r.Lookup(5) != nil {
		t.Fatal("Lookup after Destroy found the entry")
	}
	if r.Destroy(5) || r.Len() != 0 {
		t.Fatal("second Destroy")
	}
	if released.Load() != 1 {
		t.Fatal("released twice")
	}
}

// A holder's reference keeps the object valid across Destroy; release runs
// once, at whichever Put is last.
func TestLastPutReleases(t *testing.T) {
	for _, holderLast := range []bool{true, false} {
		t.Run(fmt.Sprintf("holderLast=%v", holderLast), func(t *testing.T) {
			r := New()
			var released atomic.Int64
			r.Add(NewConn(3, netip.AddrPortFrom(testAddr, 3), "h3", func() { released.Add(1) }))
			c := r.Lookup(3)
			if holderLast {
				r.Destroy(3)
				if released.Load() != 0 {
					t.Fatal("released while a holder has a reference")
				}
				if r.Lookup(3) != nil {
					t.Fatal("destroyed entry still visible")
				}
				if c.Cookie != 3 || c.Dest.Port() != 3 || c.Host != "h3" {
					t.Fatal("holder's object changed")
				}
				c.Put()
			} else {
				c.Put()
				if released.Load() != 0 {
					t.Fatal("released while registered")
				}
				r.Destroy(3)
			}
			if released.Load() != 1 {
				t.Fatalf("released %d times, want 1", released.Load())
			}
			mustPanic(t, "extra Put", c.Put)
		})
	}
}

func TestReclaim(t *testing.T) {
	r := New()
	var released atomic.Int64
	for i := uint64(1); i <= 10; i++ {
		r.Add(counted(i, &released))
	}
	held := r.Lookup(3) // odd, will be reclaimed while held
	n := r.Reclaim(func(c uint64) bool { return c%2 == 0 })
	if n != 5 || r.Len() != 5 {
		t.Fatalf("reclaimed %d, left %d; want 5, 5", n, r.Len())
	}
	if released.Load() != 4 {
		t.Fatalf("released %d, want 4 (one is held)", released.Load())
	}
	held.Put()
	if released.Load() != 5 {
		t.Fatal("holder's Put did not release")
	}
	for i := uint64(1); i <= 10; i++ {
		c := r.Lookup(i)
		if (c != nil) != (i%2 == 0) {
			t.Fatalf("cookie %d: present %v", i, c != nil)
		}
		if c != nil {
			c.Put()
		}
	}
	if r.Reclaim(func(uint64) bool { return true }) != 0 {
		t.Fatal("reclaimed live entries")
	}
}

func TestReclaimUpTo(t *testing.T) {
	r := New()
	var released atomic.Int64
	r.Add(counted(1, &released))
	r.Add(counted(2, &released))
	gen := r.Generation()
	r.Add(counted(3, &released)) // registered after the live set was taken
	if n := r.ReclaimUpTo(gen, func(uint64) bool { return false }); n != 2 {
		t.Fatalf("reclaimed %d, want 2", n)
	}
	if c := r.Lookup(3); c == nil {
		t.Fatal("entry newer than the generation reclaimed")
	} else {
		c.Put()
	}
}

// live and release run without the registry lock: calling back into the
// registry from them must not deadlock.
func TestCallbacksRunUnlocked(t *testing.T) {
	r := New()
	done := make(chan struct{})
	go func() {
		defer close(done)
		reenter := func() {
			if c := r.Lookup(1000); c != nil {
				c.Put()
			}
			r.Len()
		}
		r.Add(NewConn(1, netip.AddrPortFrom(testAddr, 1), "", reenter))
		r.Add(NewConn(2, netip.AddrPortFrom(testAddr, 2), "", reenter))
		r.Add(NewConn(1000, netip.AddrPortFrom(testAddr, 9), "", nil))
		r.Destroy(1)
		r.Reclaim(func(c uint64) bool { reenter(); return c != 2 })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: a callback ran with the registry lock held")
	}
}

// An entry destroyed and registered again while Reclaim asks live about it is
// not the object Reclaim looked at, and survives.
func TestReclaimSkipsReplaced(t *testing.T) {
	r := New()
	var released atomic.Int64
	old := counted(1, &released)
	r.Add(old)
	repl := counted(1, &released)
	n := r.Reclaim(func(c uint64) bool {
		r.Destroy(1)
		if err := r.Add(repl); err != nil {
			t.Error(err)
		}
		return false
	})
	if n != 0 {
		t.Fatalf("reclaimed %d", n)
	}
	if c := r.Lookup(1); c != repl {
		t.Fatal("replacement was reclaimed")
	} else {
		c.Put()
	}
	if released.Load() != 1 {
		t.Fatalf("released %d, want 1 (the old one)", released.Load())
	}
}

func TestShrinkRule(t *testing.T) {
	r := New()
	const peak = 100_000
	for i := range uint64(peak) {
		r.Add(NewConn(i, netip.AddrPort{}, "", nil))
	}
	heapFull := heapInuse()
	// Down to just above 1/8 of the peak: no rebuild yet.
	for i := range uint64(peak - peak/shrinkRatio - 1) {
		r.Destroy(i)
	}
	if r.peak != peak {
		t.Fatalf("rebuilt early: peak %d", r.peak)
	}
	r.Destroy(peak - peak/shrinkRatio - 1)
	if r.peak != peak/shrinkRatio {
		t.Fatalf("not rebuilt at 1/%d of the peak: peak %d, Len %d", shrinkRatio, r.peak, r.Len())
	}
	for i := uint64(peak - peak/shrinkRatio); i < peak-100; i++ {
		r.Destroy(i)
	}
	if r.Len() != 100 {
		t.Fatalf("Len %d", r.Len())
	}
	heapSmall := heapInuse()
	t.Logf("HeapInuse with %d entries: %d KiB; with 100 after shrinking: %d KiB", peak, heapFull>>10, heapSmall>>10)
	if heapSmall > heapFull/4 {
		t.Fatalf("map memory not given back: %d KiB of %d KiB", heapSmall>>10, heapFull>>10)
	}
	for i := uint64(peak - 100); i < peak; i++ {
		if c := r.Lookup(i); c == nil {
			t.Fatalf("entry %d lost in the rebuild", i)
		} else {
			c.Put()
		}
	}
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// Memory stays flat over a million short connections with ~100 open at a
// time, each one destroyed explicitly.
func TestMemoryFlatDestroy(t *testing.T) {
	const total, open = 1_000_000, 100
	r := New()
	var released atomic.Int64
	var base uint64
	for i := range uint64(total) {
		if err := r.Add(counted(i, &released)); err != nil {
			t.Fatal(err)
		}
		if i >= open {
			r.Destroy(i - open)
		}
		if i == total/10 {
			base = heapInuse()
		}
	}
	end := heapInuse()
	t.Logf("HeapInuse after %d cycles: %d KiB; after %d: %d KiB; Len %d", total/10, base>>10, total, end>>10, r.Len())
	if r.Len() != open || released.Load() != total-open {
		t.Fatalf("Len %d, released %d", r.Len(), released.Load())
	}
	if end > base+memSlack {
		t.Fatalf("HeapInuse grew by %d KiB", (end-base)>>10)
	}
}

// memSlack is the growth of HeapInuse tolerated between two measurements:
// the runtime's own variation, far below what a leak of 900,000 entries
// (tens of MiB) would show.
const memSlack = 2 << 20

// Memory stays flat over a million short connections with ~100 open at a
// time when nothing calls Destroy and the Sweeper reclaims the entries of
// closed sockets, as in the supervisor, which does not see close().
func TestMemoryFlatSweeper(t *testing.T) {
	const total, open, minLen = 1_000_000, 100, 1024
	r := New()
	var released atomic.Int64
	var newest atomic.Uint64 // sockets newest-open+1 .. newest are open
	live := func() (map[uint64]struct{}, error) {
		n := newest.Load()
		m := make(map[uint64]struct{}, open)
		for c := n - min(n, open-1); c <= n; c++ {
			m[c] = struct{}{}
		}
		return m, nil
	}
	s := NewSweeper(r, live, minLen, t.Logf)
	var base uint64
	maxLen := 0
	for i := range uint64(total) {
		if err := r.Add(counted(i, &released)); err != nil {
			t.Fatal(err)
		}
		newest.Store(i)
		s.Added()
		maxLen = max(maxLen, r.Len())
		if i == total/10 {
			base = heapInuse()
		}
	}
	s.Close()
	end := heapInuse()
	t.Logf("HeapInuse after %d connections: %d KiB; after %d: %d KiB; largest Len %d, Len %d", total/10, base>>10, total, end>>10, maxLen, r.Len())
	if end > base+memSlack {
		t.Fatalf("HeapInuse grew by %d KiB", (end-base)>>10)
	}
	// The back-pressure bound, plus this test's one adder.
	if maxLen > backlog*max(minLen, 2*open)+1 {
		t.Fatalf("registry reached %d entries with %d open and min %d", maxLen, open, minLen)
	}
	if got := int64(r.Len()) + released.Load(); got != total {
		t.Fatalf("Len + released = %d, want %d", got, total)
	}
}

// TestHammer runs random add, lookup-use-put, destroy and reclaim from many
// goroutines on a small key space, and checks that no object is used after
// its release and that every created object is released exactly once.
func TestHammer(t *testing.T) {
	const keys = 32
	workers := max(16, 4*runtime.GOMAXPROCS(0))
	r := New()
	var created, released, uses atomic.Int64
	var flags sync.Map // *Conn -> *atomic.Bool, set by release
	newConn := func(cookie uint64) *Conn {
		flag := new(atomic.Bool)
		c := NewConn(cookie, netip.AddrPortFrom(testAddr, uint16(cookie)), fmt.Sprint("h", cookie), func() {
			if flag.Swap(true) {
				t.Errorf("cookie %d released twice", cookie)
			}
			released.Add(1)
		})
		flags.Store(c, flag)
		created.Add(1)
		return c
	}
	use := func(c *Conn, cookie uint64) {
		f, _ := flags.Load(c)
		flag := f.(*atomic.Bool)
		for range 2 {
			if flag.Load() {
				t.Errorf("cookie %d: use after release", cookie)
			}
			if c.refcount() < 1 {
				t.Errorf("cookie %d: used with refcount %d", cookie, c.refcount())
			}
			if c.Cookie != cookie || c.Dest.Port() != uint16(cookie) || c.Host != fmt.Sprint("h", cookie) {
				t.Errorf("cookie %d: wrong object %+v", cookie, c)
			}
			runtime.Gosched() // let a Destroy or Reclaim run in the middle
		}
		uses.Add(1)
	}
	deadline := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			for i := 0; i%256 != 0 || time.Now().Before(deadline); i++ {
				cookie := rng.Uint64N(keys) + 1
				switch op := rng.IntN(100); {
				case op < 30:
					c := newConn(cookie)
					if err := r.Add(c); err != nil {
						if !errors.Is(err, ErrExists) {
							t.Error(err)
						}
						c.Put()
					}
				case op < 80:
					if c := r.Lookup(cookie); c != nil {
						use(c, cookie)
						c.Put()
					}
				case op < 97:
					r.Destroy(cookie)
				case op < 99:
					parity := rng.Uint64N(2)
					r.Reclaim(func(c uint64) bool { return c%2 == parity })
				default:
					gen := r.Generation()
					r.ReclaimUpTo(gen, func(c uint64) bool { return c%3 == 0 })
				}
			}
		})
	}
	wg.Wait()
	left := r.Len()
	r.Reclaim(func(uint64) bool { return false })
	t.Logf("%d goroutines: %d objects created, %d uses, %d left at the end", workers, created.Load(), uses.Load(), left)
	if r.Len() != 0 {
		t.Fatalf("Len %d after reclaiming all", r.Len())
	}
	if created.Load() != released.Load() {
		t.Fatalf("created %d, released %d", created.Load(), released.Load())
	}
	flags.Range(func(k, v any) bool {
		if !v.(*atomic.Bool).Load() {
			t.Errorf("cookie %d never released", k.(*Conn).Cookie)
		}
		return true
	})
}

func BenchmarkLookupParallel(b *testing.B) {
	const keys = 1024
	r := New()
	for i := range uint64(keys) {
		r.Add(NewConn(i, netip.AddrPortFrom(testAddr, 80), "", nil))
	}
	var seed atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 0))
		for pb.Next() {
			c := r.Lookup(rng.Uint64N(keys))
			_ = c.Dest
			c.Put()
		}
	})
}

func BenchmarkAddDestroy(b *testing.B) {
	r := New()
	for i := range uint64(100) { // a few long-lived neighbours
		r.Add(NewConn(1<<40+i, netip.AddrPortFrom(testAddr, 80), "", nil))
	}
	var i uint64
	for b.Loop() {
		r.Add(NewConn(i, netip.AddrPortFrom(testAddr, 80), "", nil))
		r.Destroy(i)
		i++
	}
}
