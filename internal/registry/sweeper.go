package registry

import (
	"sync"
	"sync/atomic"
)

// Sweeper decides when to reclaim the entries of closed sockets. The
// supervisor does not see close(), so entries are reclaimed by comparing the
// registry with the set of live sockets: after an Add, when Len() has reached
// a threshold, one sweep runs in the background (never two at once), and the
// threshold becomes max(min, 2*live) after it, live being the number of
// entries the sweep found alive. A sweep costs time proportional to the
// registry's size, and the next one starts only when the registry has reached
// twice the entries the last one kept (or min): amortized, O(1) per Add.
//
// Back-pressure: if Adds outrun the background sweep until Len() reaches
// backlog times the threshold, Added waits for the running sweep to end. This
// bounds the registry at backlog*max(min, 2*live) entries, plus one per
// goroutine in Add, whatever the rate of Adds.
//
// Locks: s.mu guards running, done and closed, and is held only to start a
// sweep, to finish one and in Close, never during one. next is atomic, so that
// Added costs one atomic load and a compare when no sweep is due.
type Sweeper struct {
	r     *Registry
	live  func() (map[uint64]struct{}, error) // listing mode: the cookies of all live sockets
	alive func(*Conn) (bool, error)           // probing mode: is this one socket alive
	min   int
	logf  func(string, ...any)

	next atomic.Int64 // Len() at which Added starts a sweep

	mu      sync.Mutex    // guards running, done and closed
	running bool          // a sweep goroutine is running
	done    chan struct{} // closed when the running sweep ends
	closed  bool          // Close was called: start no more sweeps
	wg      sync.WaitGroup
}

// backlog is how many times the threshold the registry may reach before
// Added waits for the running sweep.
const backlog = 4

// NewSweeper returns a sweeper for r. liveCookies returns the cookies of the
// live sockets (sockdiag.LiveTCPCookies); it is called without any lock held.
// min is the smallest threshold (at least 1). logf, which may be nil, reports
// failed sweeps.
func NewSweeper(r *Registry, liveCookies func() (map[uint64]struct{}, error), min int, logf func(string, ...any)) *Sweeper {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s := &Sweeper{r: r, live: liveCookies, min: max(min, 1), logf: logf}
	s.next.Store(int64(s.min))
	return s
}

// NewProbingSweeper returns a sweeper for r that asks about each entry it looks at, instead of
// listing every live socket: alive (a sockdiag.Prober lookup by the entry's Sock) reports
// whether the entry's socket is alive, or an error if the kernel could not tell. It is called
// without any lock held, from one sweep at a time except for SweepNow.
//
// A lookup costs the same whatever else lives in the network namespace, where a listing walks
// the whole TCP table (TIME_WAIT sockets included): 1-4 µs per entry against 5-40 ms per
// listing. An entry found dead is asked about a second time before it is dropped, as the
// listing mode takes the union of two listings; an entry whose lookup fails is kept.
func NewProbingSweeper(r *Registry, alive func(*Conn) (bool, error), min int, logf func(string, ...any)) *Sweeper {
	s := NewSweeper(r, nil, min, logf)
	s.alive = alive
	return s
}

// Added is called after each successful Add, without any lock held. It starts
// a background sweep if one is due and none is running, and waits for the
// running one if the registry has reached backlog times the threshold.
func (s *Sweeper) Added() {
	n, next := int64(s.r.Len()), s.next.Load()
	if n < next {
		return // fast path: one atomic load each side of the compare
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if !s.running {
		s.running = true
		s.done = make(chan struct{})
		s.wg.Add(1)
		go s.run(s.done)
	}
	done := s.done
	s.mu.Unlock()
	if n >= backlog*next {
		<-done
	}
}

// run is the background sweep goroutine.
func (s *Sweeper) run(done chan struct{}) {
	defer s.wg.Done()
	if live, err := s.sweep(); err != nil {
		// Nothing was reclaimed: wait for the registry to double before
		// trying again, rather than retry at every Add.
		s.next.Store(int64(max(s.min, 2*s.r.Len())))
	} else {
		s.next.Store(int64(max(s.min, 2*live)))
	}
	s.mu.Lock()
	s.running = false
	close(done)
	s.mu.Unlock()
}

// Close stops further sweeps and waits for a running one to finish.
func (s *Sweeper) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

// sweep runs one reclamation and returns how many of the entries it looked at
// were alive.
//
// The generation is read before the live set is taken: an entry registered
// later may belong to a socket the dump has not seen, and is left for the next
// sweep. The live set is the union of two dumps taken one after the other,
// because one dump can miss a socket that lives through it (see
// sockdiag.LiveTCPCookies); a cookie is never reused, so the union can only
// keep an entry too long, never wrongly drop one.
//
// If a dump fails nothing is reclaimed: keeping the entry of a closed socket
// costs memory until the next sweep, while dropping a live one would make
// getpeername on it show Tor's address.
// SweepNow reclaims the entries of closed sockets at once, in the caller's goroutine, whatever the
// threshold (a caller that needs their release callbacks to have run now, such as a full
// stand-in table). It may run alongside a background sweep: both only destroy entries of sockets
// that neither of their two listings found alive.
func (s *Sweeper) SweepNow() {
	s.sweep()
}

func (s *Sweeper) sweep() (live int, err error) {
	if s.alive != nil {
		return s.probe()
	}
	gen := s.r.Generation()
	live1, err := s.live()
	if err != nil {
		s.logf("registry: sweep skipped, listing live sockets failed: %v", err)
		return 0, err
	}
	live2, err := s.live()
	if err != nil {
		s.logf("registry: sweep skipped, listing live sockets failed: %v", err)
		return 0, err
	}
	s.r.ReclaimUpTo(gen, func(cookie uint64) bool {
		_, ok := live1[cookie]
		if !ok {
			_, ok = live2[cookie]
		}
		if ok {
			live++
		}
		return ok
	})
	return live, nil
}

// probe is sweep in probing mode: every entry registered before it started is looked up, and
// dropped if two lookups in a row find its socket dead. Lookups that fail keep their entry; if
// every lookup failed, the sweep reports the first error.
func (s *Sweeper) probe() (live int, err error) {
	gen := s.r.Generation()
	asked, failed := 0, 0
	var first error
	s.r.ReclaimConnsUpTo(gen, func(c *Conn) bool {
		asked++
		ok, err := s.alive(c)
		if err == nil && !ok {
			ok, err = s.alive(c) // second look before dropping
		}
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
			ok = true
		}
		if ok {
			live++
		}
		return ok
	})
	if failed > 0 {
		s.logf("registry: %d of %d sockets could not be looked up, their entries are kept: %v", failed, asked, first)
		if failed == asked {
			return live, first
		}
	}
	return live, nil
}
