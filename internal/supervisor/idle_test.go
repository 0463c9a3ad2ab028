package supervisor

import (
	"container/list"
	"sync"
	"testing"
	"time"
)

// An idle list drops its oldest beyond max at once, and the rest when they have been idle for
// keep, each through drop (which unparks), with the owner's lock held.
func TestIdleList(t *testing.T) {
	var mu sync.Mutex // the owner's lock
	q := idleList[int]{keep: 20 * time.Millisecond, max: 2}
	places := map[int]*list.Element{}
	var dropped []int
	gone := make(chan struct{})
	drop := func(v int) {
		q.unpark(places[v])
		delete(places, v)
		dropped = append(dropped, v)
		if len(dropped) == 3 {
			close(gone)
		}
	}
	var fire func()
	fire = func() {
		mu.Lock()
		defer mu.Unlock()
		q.expire(drop, fire)
	}
	mu.Lock()
	for v := 1; v <= 3; v++ {
		places[v] = q.park(v, drop, fire)
	}
	if len(dropped) != 1 || dropped[0] != 1 {
		t.Fatalf("beyond max: dropped %v, want [1]", dropped)
	}
	q.unpark(places[3]) // used again
	delete(places, 3)
	places[4] = q.park(4, drop, fire)
	mu.Unlock()
	<-gone
	mu.Lock()
	defer mu.Unlock()
	if len(dropped) != 3 || dropped[1] != 2 || dropped[2] != 4 || q.l.Len() != 0 || q.timer != nil {
		t.Fatalf("expired: dropped %v, %d left, timer %v; want [1 2 4], none, nil", dropped, q.l.Len(), q.timer)
	}
}
