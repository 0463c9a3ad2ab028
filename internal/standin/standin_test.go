package standin

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func mustNew(t *testing.T, p string, reserved ...netip.Addr) *Table {
	t.Helper()
	tb, err := New(netip.MustParsePrefix(p), reserved...)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func mustAssign(t *testing.T, tb *Table, name string) netip.Addr {
	t.Helper()
	a, err := tb.Assign(name)
	if err != nil {
		t.Fatalf("Assign(%q): %v", name, err)
	}
	return a
}

// checkInvariants verifies, under the table lock, that the maps are inverse
// bijections, the recency list holds exactly the entries, and every address is
// inside the usable range.
func checkInvariants(t *testing.T, tb *Table) {
	t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.byName) != len(tb.byAddr) {
		t.Fatalf("byName has %d entries, byAddr %d", len(tb.byName), len(tb.byAddr))
	}
	for name, e := range tb.byName {
		if e.name != name || tb.byAddr[e.addr] != e {
			t.Fatalf("entry %q -> %v not the same in both maps", name, e.addr)
		}
		if !tb.prefix.Contains(e.addr) || e.addr == tb.base {
			t.Fatalf("address %v outside the usable range of %v", e.addr, tb.prefix)
		}
	}
	n := 0
	for e := tb.lru.next; e != &tb.lru; e = e.next {
		if e.next.prev != e {
			t.Fatal("broken recency list")
		}
		if tb.byAddr[e.addr] != e {
			t.Fatalf("list entry %v not in the maps", e.addr)
		}
		n++
	}
	if n != len(tb.byAddr) {
		t.Fatalf("recency list has %d entries, maps %d", n, len(tb.byAddr))
	}
}

func TestCaseInsensitiveAndStable(t *testing.T) {
	tb := mustNew(t, "127.42.42.0/24")
	a := mustAssign(t, tb, "ABC.onion")
	if a != netip.MustParseAddr("127.42.42.1") {
		t.Fatalf("first address %v, want 127.42.42.1 (the network address is skipped)", a)
	}
	for _, n := range []string{"abc.onion", "Abc.Onion.", "abc.onion."} {
		if b := mustAssign(t, tb, n); b != a {
			t.Fatalf("Assign(%q) = %v, want %v", n, b, a)
		}
	}
	if b := mustAssign(t, tb, "other.onion"); b != netip.MustParseAddr("127.42.42.2") {
		t.Fatalf("second name got %v", b)
	}
	if tb.Len() != 2 {
		t.Fatalf("Len = %d", tb.Len())
	}
	if name, ok := tb.Name(a); !ok || name != "abc.onion" {
		t.Fatalf("Name(%v) = %q, %v", a, name, ok)
	}
	if _, ok := tb.Name(netip.MustParseAddr("127.42.42.77")); ok {
		t.Fatal("unallocated address has a name")
	}
	// IPv4-mapped form of a stand-in is the stand-in.
	if name, ok := tb.Name(netip.MustParseAddr("::ffff:127.42.42.1")); !ok || name != "abc.onion" {
		t.Fatalf("mapped Name = %q, %v", name, ok)
	}
	if _, err := tb.Assign("."); !errors.Is(err, ErrEmptyName) {
		t.Fatalf("Assign(.) err = %v", err)
	}
	checkInvariants(t, tb)
}

func TestRanges(t *testing.T) {
	tests := []struct {
		prefix   string
		reserved []string
		want     []string // every usable address, in order
		err      bool
	}{
		{prefix: "127.42.42.128/25", want: rangeOf("127.42.42.", 129, 254)},
		{prefix: "10.0.0.0/30", want: []string{"10.0.0.1", "10.0.0.2"}},
		{prefix: "10.0.0.4/30", want: []string{"10.0.0.5", "10.0.0.6"}},
		{prefix: "10.0.0.8/29", reserved: []string{"10.0.0.10", "10.0.0.99"}, want: []string{"10.0.0.9", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"}},
		{prefix: "127.42.42.200/29", want: rangeOf("127.42.42.", 201, 206)},              // not aligned on /24: stays inside
		{prefix: "127.42.42.17/28", want: rangeOf("127.42.42.", 17, 30)},                 // host bits set: masked to .16/28
		{prefix: "127.0.0.0/23", want: rangeOf2("127.0.0.", 1, 255, "127.0.1.", 0, 254)}, // .0.255 and .1.0 are inside, usable
		{prefix: "fd00::/126", want: []string{"fd00::1", "fd00::2", "fd00::3"}},
		{prefix: "fd00::/127", want: []string{"fd00::1"}},
		{prefix: "10.0.0.0/31", err: true},
		{prefix: "10.0.0.0/32", err: true},
		{prefix: "fd00::/128", err: true},
		{prefix: "10.0.0.0/30", reserved: []string{"10.0.0.1", "10.0.0.2"}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			var res []netip.Addr
			for _, r := range tt.reserved {
				res = append(res, netip.MustParseAddr(r))
			}
			tb, err := New(netip.MustParsePrefix(tt.prefix), res...)
			if tt.err {
				if err == nil {
					t.Fatal("New succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range tt.want {
				if a := mustAssign(t, tb, fmt.Sprintf("n%d.example", i)); a.String() != w {
					t.Fatalf("name %d got %v, want %s", i, a, w)
				}
			}
			// The range is full: the next name reuses the oldest (n0), never leaves the range.
			a := mustAssign(t, tb, "extra.example")
			if a.String() != tt.want[0] {
				t.Fatalf("reuse gave %v, want %s", a, tt.want[0])
			}
			if _, ok := tb.Name(a); !ok || tb.Len() != len(tt.want) {
				t.Fatalf("Len = %d after reuse, want %d", tb.Len(), len(tt.want))
			}
			for _, r := range res {
				if tb.Contains(r) {
					t.Fatalf("reserved %v is Contained", r)
				}
			}
			checkInvariants(t, tb)
		})
	}
}

func rangeOf(pfx string, from, to int) []string {
	var s []string
	for i := from; i <= to; i++ {
		s = append(s, fmt.Sprintf("%s%d", pfx, i))
	}
	return s
}

func rangeOf2(p1 string, f1, t1 int, p2 string, f2, t2 int) []string {
	return append(rangeOf(p1, f1, t1), rangeOf(p2, f2, t2)...)
}

func TestContains(t *testing.T) {
	tb := mustNew(t, "127.42.42.128/25")
	for s, want := range map[string]bool{
		"127.42.42.128": true, "127.42.42.255": true, "127.42.42.200": true,
		"127.42.42.127": false, "127.42.43.0": false, "::ffff:127.42.42.130": true, "::1": false,
	} {
		if got := tb.Contains(netip.MustParseAddr(s)); got != want {
			t.Errorf("Contains(%s) = %v", s, got)
		}
	}
}

func TestLargeRangesAreLazy(t *testing.T) {
	for _, p := range []string{"127.192.0.0/10", "fd74:6f72:736b::/48", "fd74::/16"} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tb := mustNew(t, p)
		a := mustAssign(t, tb, "example.com")
		b := mustAssign(t, tb, "example.org")
		runtime.ReadMemStats(&after)
		if grow := after.TotalAlloc - before.TotalAlloc; grow > 64<<10 {
			t.Errorf("%s: New and two Assigns allocated %d bytes", p, grow)
		}
		if !tb.Contains(a) || !tb.Contains(b) || a == b {
			t.Errorf("%s: got %v, %v", p, a, b)
		}
		t.Logf("%s: %v %v", p, a, b)
	}
	tb := mustNew(t, "fd74:6f72:736b::/48")
	if a := mustAssign(t, tb, "x"); a != netip.MustParseAddr("fd74:6f72:736b::1") {
		t.Fatalf("got %v", a)
	}
}

func TestEntryLimit(t *testing.T) {
	tb, err := NewLimited(netip.MustParsePrefix("127.192.0.0/10"), 3)
	if err != nil {
		t.Fatal(err)
	}
	a := mustAssign(t, tb, "a")
	mustAssign(t, tb, "b")
	mustAssign(t, tb, "c")
	if d := mustAssign(t, tb, "d"); d != a || tb.Len() != 3 {
		t.Fatalf("d = %v (a = %v), Len %d", d, a, tb.Len())
	}
}

func TestReuseOldestUnreferenced(t *testing.T) {
	tb := mustNew(t, "10.0.0.0/29") // 6 addresses: .1-.6
	addrs := map[string]netip.Addr{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		addrs[n] = mustAssign(t, tb, n)
	}
	mustAssign(t, tb, "a") // refresh a: b is now the oldest
	_, relB, ok := tb.Acquire(addrs["b"])
	if !ok {
		t.Fatal("Acquire(b) failed")
	}
	// b is referenced: the next oldest unreferenced is c.
	if g := mustAssign(t, tb, "g"); g != addrs["c"] {
		t.Fatalf("g got %v, want c's %v", g, addrs["c"])
	}
	if _, ok := tb.Name(addrs["c"]); !ok {
		t.Fatal("c's address not reassigned")
	}
	if n, _ := tb.Name(addrs["c"]); n != "g" {
		t.Fatalf("c's address now names %q", n)
	}
	if n, _ := tb.Name(addrs["b"]); n != "b" {
		t.Fatalf("referenced b renamed to %q", n)
	}
	// c is forgotten: assigning it again gives a new address (d's, the oldest now).
	if c := mustAssign(t, tb, "c"); c != addrs["d"] {
		t.Fatalf("c got %v, want %v", c, addrs["d"])
	}
	relB()
	relB() // idempotent
	checkInvariants(t, tb)
}

func TestErrFullWhenAllReferenced(t *testing.T) {
	tb := mustNew(t, "10.0.0.0/29")
	var rels []func()
	for i := range 6 {
		a := mustAssign(t, tb, fmt.Sprintf("n%d", i))
		name, rel, ok := tb.Acquire(a)
		if !ok || name != fmt.Sprintf("n%d", i) {
			t.Fatalf("Acquire(%v) = %q, %v", a, name, ok)
		}
		rels = append(rels, rel)
	}
	// Two references on one entry: one release is not enough.
	_, extra, _ := tb.Acquire(netip.MustParseAddr("10.0.0.4"))
	if _, err := tb.Assign("new"); !errors.Is(err, ErrFull) {
		t.Fatalf("Assign with every entry referenced: %v", err)
	}
	// Existing names still answer.
	if a := mustAssign(t, tb, "n2"); a != netip.MustParseAddr("10.0.0.3") {
		t.Fatalf("n2 = %v", a)
	}
	rels[3]() // n3 = 10.0.0.4, still referenced by extra
	if _, err := tb.Assign("new"); !errors.Is(err, ErrFull) {
		t.Fatalf("Assign with n3 still referenced once: %v", err)
	}
	extra()
	if a := mustAssign(t, tb, "new"); a != netip.MustParseAddr("10.0.0.4") {
		t.Fatalf("new = %v, want n3's 10.0.0.4", a)
	}
	if _, _, ok := tb.Acquire(netip.MustParseAddr("10.0.0.7")); ok {
		t.Fatal("Acquire of the broadcast address succeeded")
	}
	for _, r := range rels {
		r()
	}
	checkInvariants(t, tb)
}

// TestHammer runs Assign, Acquire, release and Name from many goroutines on a
// small range with more names than addresses, so entries are reused all the
// time, and checks that a referenced entry never changes name.
func TestHammer(t *testing.T) {
	tb := mustNew(t, "127.42.42.0/28") // 14 addresses
	const workers = 16
	iters := 20000
	if testing.Short() {
		iters = 2000
	}
	var full atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range iters {
				name := fmt.Sprintf("Name%d.onion", r.IntN(40))
				a, err := tb.Assign(name)
				if errors.Is(err, ErrFull) {
					full.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				switch r.IntN(3) {
				case 0:
					tb.Name(a)
				case 1, 2:
					got, rel, ok := tb.Acquire(a)
					if !ok {
						t.Errorf("Acquire(%v) of an allocated address failed", a)
						return
					}
					for range 3 {
						runtime.Gosched()
						if n, ok := tb.Name(a); !ok || n != got {
							t.Errorf("referenced %v renamed %q -> %q", a, got, n)
						}
						if b, err := tb.Assign(got); err != nil || b != a {
							t.Errorf("referenced %q moved %v -> %v (%v)", got, a, b, err)
						}
					}
					rel()
				}
			}
		}()
	}
	wg.Wait()
	checkInvariants(t, tb)
	tb.mu.Lock()
	for _, e := range tb.byAddr {
		if n := e.refs.Load(); n != 0 {
			t.Errorf("%v has %d references left", e.addr, n)
		}
	}
	tb.mu.Unlock()
	t.Logf("ErrFull %d times, %d entries", full.Load(), tb.Len())
}

func BenchmarkAssignExisting(b *testing.B) {
	tb, _ := New(netip.MustParsePrefix("127.192.0.0/10"))
	tb.Assign("example.com")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tb.Assign("example.com")
		}
	})
}
