// Package standin has one job: hand out stand-in addresses for names, one
// address per name, from an address range (a prefix), for one torsocks
// invocation. A program that resolves a name gets a stand-in; when it connects
// to the stand-in, the supervisor looks the name up here and sends the name to
// Tor in the SOCKS CONNECT. The same Table serves every process of the traced
// tree, so a name resolved in a parent connects from an exec'd child.
//
// Discipline (the seed's registry discipline, docs/registry.md): one lock,
// Table.mu (the table lock), guards the two maps, the recency list and the
// allocation cursor. Entries are immutable once published (an address that is
// reused gets a new entry object; the old one is dropped), except for their
// reference count, which is atomic and only incremented under the table lock
// (Acquire: lookup, increment, unlock — the seed's lookup-use-release), and
// their list links, guarded by the table lock. A release drops the count
// without the lock. An entry is reused for another name only when, under the
// table lock, its count reads 0; since increments happen only under that lock,
// a referenced entry never changes name. The table lock is held for map and
// list operations only: never across a call outside this package.
//
// Addresses are allocated lazily (a cursor over the range plus maps), so a /10
// or an IPv6 /48 costs nothing until names are assigned. Memory is bounded by
// the entry limit (DefaultMaxEntries, about 200 bytes per entry): past it, or
// when the range is exhausted, the least recently used entry with no live
// reference is reused.
package standin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Lookup is what the connect path learns about one destination address (Server.StandIn in
// internal/dns, over every Table in use).
type Lookup struct {
	// InRange: the address is inside a stand-in range in use. Such an address is never connected
	// as it is: with Name set it is carried to Tor by name, without it is refused.
	InRange bool
	// Name is the name the address stands for, "" when it is not allocated (or no longer is).
	Name string
	// Release drops the reference that keeps Name bound to the address while the connection
	// lives: call it exactly once, when the connection is gone (later calls do nothing). Never nil.
	Release func()
}

// ErrFull is returned by Assign when every allocated entry is referenced by a
// live connection and no address is left: no entry can be reused.
var ErrFull = errors.New("standin: every stand-in address is in use by a live connection")

// ErrEmptyName is returned by Assign for a name that is empty once normalised.
var ErrEmptyName = errors.New("standin: empty name")

// DefaultMaxEntries is the most entries a Table made by New holds (about
// 50 MiB at worst): beyond it, least recently used unreferenced entries are
// reused even if the range has addresses left.
const DefaultMaxEntries = 1 << 18

// maxOffsets caps the number of addresses considered in a huge (IPv6) range:
// offsets are uint64s.
const maxOffsets = math.MaxInt64

// entry is one name and its address. name and addr never change once the entry
// is in the maps; refs is atomic; prev and next are guarded by Table.mu.
type entry struct {
	name       string
	addr       netip.Addr
	refs       atomic.Int32 // live references (connections) to this entry
	prev, next *entry       // recency list, most recent first; guarded by Table.mu
}

// Table hands out addresses from a range, one per name. All its methods may be
// called from any goroutine.
type Table struct {
	// Immutable after New.
	prefix   netip.Prefix
	base     netip.Addr // the prefix's first address (offset 0)
	last     uint64     // highest usable offset (offsets 1..last)
	limit    int        // most entries held at once
	reserved map[netip.Addr]struct{}

	mu     sync.Mutex        // the table lock: guards everything below, and entry.prev/next
	byName map[string]*entry // normalised name -> entry
	byAddr map[netip.Addr]*entry
	cursor uint64 // next never-allocated offset
	lru    entry  // sentinel of the recency list: lru.next is the most recent, lru.prev the least
}

// New returns a table for prefix (IPv4 or IPv6) with room for at most
// DefaultMaxEntries names; see NewLimited.
func New(prefix netip.Prefix, reserved ...netip.Addr) (*Table, error) {
	return NewLimited(prefix, DefaultMaxEntries, reserved...)
}

// NewLimited returns a table handing out addresses of prefix, holding at most
// maxEntries names at once (maxEntries <= 0 means no limit but the range's).
//
// Which addresses are used: every address of the prefix except its first (the
// network address: 127.42.42.0 in 127.42.42.0/24, fd74:6f72:736b:: in a /48),
// for IPv4 its last (the broadcast address: 127.42.42.255), and the reserved
// addresses. The range is the prefix, whatever its alignment: 127.42.42.128/25
// gives .129 to .254, 10.0.0.0/30 gives 10.0.0.1 and 10.0.0.2. Addresses are
// given out in increasing order. A prefix with no usable address (an IPv4 /31
// or /32, an IPv6 /128, or every usable address reserved) is an error.
func NewLimited(prefix netip.Prefix, maxEntries int, reserved ...netip.Addr) (*Table, error) {
	if !prefix.IsValid() {
		return nil, fmt.Errorf("standin: invalid prefix %v", prefix)
	}
	if prefix.Addr().Zone() != "" {
		return nil, fmt.Errorf("standin: prefix %v has a zone", prefix)
	}
	prefix = prefix.Masked()
	hostBits := prefix.Addr().BitLen() - prefix.Bits()
	var last uint64
	switch {
	case prefix.Addr().Is4() && hostBits < 2:
		return nil, fmt.Errorf("standin: range %v has no usable address (an IPv4 range needs at least 4 addresses: network, broadcast and two more)", prefix)
	case prefix.Addr().Is4():
		last = uint64(1)<<hostBits - 2 // skip the broadcast address
	case hostBits == 0:
		return nil, fmt.Errorf("standin: range %v has no usable address", prefix)
	case hostBits >= 63:
		last = maxOffsets
	default:
		last = uint64(1)<<hostBits - 1
	}
	t := &Table{
		prefix:   prefix,
		base:     prefix.Addr(),
		last:     last,
		limit:    maxEntries,
		reserved: make(map[netip.Addr]struct{}),
		byName:   make(map[string]*entry),
		byAddr:   make(map[netip.Addr]*entry),
		cursor:   1,
	}
	if t.limit <= 0 || uint64(t.limit) > last {
		t.limit = int(min(last, math.MaxInt))
	}
	t.lru.next, t.lru.prev = &t.lru, &t.lru
	for _, a := range reserved {
		a = a.WithZone("").Unmap()
		if prefix.Contains(a) {
			t.reserved[a] = struct{}{}
		}
	}
	if uint64(len(t.reserved)) >= last {
		usable := 0
		for off := uint64(1); off <= last; off++ {
			if _, r := t.reserved[t.addrAt(off)]; !r {
				usable++
			}
		}
		if usable == 0 {
			return nil, fmt.Errorf("standin: every address of range %v is reserved", prefix)
		}
	}
	return t, nil
}

// Prefix returns the table's range.
func (t *Table) Prefix() netip.Prefix { return t.prefix }

// Normalize returns the form of name the table keys on: ASCII letters in lower
// case (DNS names are case-insensitive, RFC 4343: ABC.onion and abc.onion are one
// name) and one trailing dot removed.
func Normalize(name string) string {
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			b := []byte(name)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return name
}

// Assign returns the stand-in address of name (normalised with Normalize),
// allocating one if the name has none. The same name gets the same address for
// as long as its entry exists; assigning refreshes the entry's recency. When the
// range (or the entry limit) is exhausted, the least recently used entry with no
// live reference is reused: its old name is forgotten and its address goes to
// name. If every entry is referenced, Assign returns ErrFull.
func (t *Table) Assign(name string) (netip.Addr, error) {
	name = Normalize(name)
	if name == "" {
		return netip.Addr{}, ErrEmptyName
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.byName[name]; ok {
		t.moveToFront(e)
		return e.addr, nil
	}
	if len(t.byAddr) < t.limit {
		for t.cursor <= t.last {
			a := t.addrAt(t.cursor)
			t.cursor++
			if _, r := t.reserved[a]; r {
				continue
			}
			t.insert(&entry{name: name, addr: a})
			return a, nil
		}
	}
	// Reuse: walk from the least recently used end. A referenced entry is moved
	// to the front (it is in use, hence recent), so each is passed over at most
	// once per walk and later walks do not meet it again first.
	for n := len(t.byAddr); n > 0; n-- {
		old := t.lru.prev
		if old.refs.Load() != 0 {
			t.moveToFront(old)
			continue
		}
		t.unlink(old)
		delete(t.byName, old.name)
		t.insert(&entry{name: name, addr: old.addr})
		return old.addr, nil
	}
	return netip.Addr{}, ErrFull
}

// Name returns the name a is the stand-in of, if a is allocated. It does not
// refresh recency and takes no reference.
func (t *Table) Name(a netip.Addr) (string, bool) {
	a = a.WithZone("").Unmap()
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.byAddr[a]; ok {
		return e.name, true
	}
	return "", false
}

// Acquire is the connect path's lookup: if a is allocated it returns its name
// and takes a reference on the entry (under the table lock, so the entry cannot
// be reused between the lookup and the increment), which keeps the entry, and so
// the name-address pair, alive until release is called. Acquire also refreshes
// the entry's recency.
//
// release must be called exactly once, when the connection is gone (the
// registry's Conn release callback). It is safe to call more than once (later
// calls do nothing) and from any goroutine; it takes no lock. When ok is false,
// release is a no-op function (never nil).
func (t *Table) Acquire(a netip.Addr) (name string, release func(), ok bool) {
	a = a.WithZone("").Unmap()
	t.mu.Lock()
	e, ok := t.byAddr[a] // lookup 2) entry = lookup
	if ok {
		e.refs.Add(1) // lookup 4) atomic_inc(refcount), under the lock
		t.moveToFront(e)
	}
	t.mu.Unlock() // lookup 5) unlock
	if !ok {
		return "", func() {}, false
	}
	var done atomic.Bool
	return e.name, func() {
		if done.CompareAndSwap(false, true) {
			if n := e.refs.Add(-1); n < 0 { // lookup 7) atomic_dec
				panic(fmt.Sprintf("standin: reference count of %v (%s) below zero", e.addr, e.name))
			}
		}
	}, true
}

// Contains reports whether a is inside the table's range and not reserved
// (allocated or not). IPv4-mapped IPv6 addresses are unmapped first.
func (t *Table) Contains(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if !t.prefix.Contains(a) {
		return false
	}
	_, r := t.reserved[a]
	return !r
}

// Len returns the number of names with an address.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byAddr)
}

// addrAt returns the address at offset off from the prefix's first address.
func (t *Table) addrAt(off uint64) netip.Addr {
	if t.base.Is4() {
		b := t.base.As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(off))
		return netip.AddrFrom4(b)
	}
	b := t.base.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	sum := lo + off
	if sum < lo {
		hi++
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], sum)
	return netip.AddrFrom16(b)
}

// insert publishes e in both maps, most recent. Called with t.mu held.
func (t *Table) insert(e *entry) {
	t.byName[e.name] = e
	t.byAddr[e.addr] = e
	t.pushFront(e)
}

func (t *Table) pushFront(e *entry) {
	e.prev, e.next = &t.lru, t.lru.next
	t.lru.next.prev = e
	t.lru.next = e
}

func (t *Table) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (t *Table) moveToFront(e *entry) {
	if t.lru.next != e {
		t.unlink(e)
		t.pushFront(e)
	}
}
