package supervisor

import (
	"container/list"
	"time"
)

// idleList keeps the listeners that have no use any more for a while, so that the next connect
// to the same destination reuses one instead of making its own: the synchronous path's inner
// listeners (sealed_linux.go) and the asynchronous path's hold listeners (async_linux.go). It
// holds at most max, most recently released first, each for keep; the oldest go first.
//
// Locking: an idleList has no lock of its own. Every method, and drop, runs with the lock that
// guards the owner's listeners and their use counts held (Supervisor.innerMu, asyncState.mu);
// the timer's function (expire's caller) takes that lock first.
type idleList[T any] struct {
	keep  time.Duration
	max   int
	l     list.List // of idleEntry[T], most recent first
	timer *time.Timer
}

type idleEntry[T any] struct {
	v     T
	since time.Time
}

// park adds v, released now, and returns its place (for unpark). Beyond max, the oldest are
// dropped: drop must unpark what it is given. When the list was empty, a timer calls fire
// (which takes the owner's lock and calls expire) after keep.
func (q *idleList[T]) park(v T, drop func(T), fire func()) *list.Element {
	e := q.l.PushFront(idleEntry[T]{v: v, since: time.Now()})
	for q.l.Len() > q.max {
		drop(q.l.Back().Value.(idleEntry[T]).v)
	}
	if q.timer == nil {
		q.timer = time.AfterFunc(q.keep, fire)
	}
	return e
}

// unpark takes the listener at e off the list (it is used again, or dropped).
func (q *idleList[T]) unpark(e *list.Element) { q.l.Remove(e) }

// expire drops (drop must unpark) the listeners idle for keep, and arms the timer again (fire)
// for the next one while any are left.
func (q *idleList[T]) expire(drop func(T), fire func()) {
	for e := q.l.Back(); e != nil; e = q.l.Back() {
		ie := e.Value.(idleEntry[T])
		if left := q.keep - time.Since(ie.since); left > 0 {
			q.timer = time.AfterFunc(left, fire)
			return
		}
		drop(ie.v)
	}
	q.timer = nil
}
