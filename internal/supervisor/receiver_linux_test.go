package supervisor

import "testing"

// TestLeaseHandOver: handOver hands the role over once (to the follower waiting in take), and
// after it neither a second handOver, a release nor the serving worker's reclaim takes the role
// again.
func TestLeaseHandOver(t *testing.T) {
	r := &receiver{max: 2, spawn: func() {}}
	r.workers.Add(1)
	r.take()
	l := r.lend()
	got := make(chan struct{})
	go func() {
		r.take() // the follower
		close(got)
	}()
	l.handOver()
	<-got
	l.handOver()
	l.release()
	if l.Held() {
		t.Error("the lease is still held after handOver")
	}
	if l.reclaim() {
		t.Error("reclaim won after handOver: two holders of the role")
	}
	r.mu.Unlock() // the follower's role
}

// TestLeaseReclaimFirst: once the worker reclaimed the role, handOver does nothing.
func TestLeaseReclaimFirst(t *testing.T) {
	r := &receiver{max: 1, spawn: func() { t.Error("a worker was started") }}
	r.take()
	l := r.lend()
	if !l.reclaim() {
		t.Fatal("reclaim lost with nobody releasing")
	}
	if l.tryRelease() {
		t.Error("tryRelease won after reclaim")
	}
	l.handOver()
	if r.mu.TryLock() {
		t.Error("the role was given up by handOver after reclaim")
	}
	r.mu.Unlock() // the worker's role
}
