package supervisor

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A call that found the descriptor table full tries again when a relayed connection ends, and
// fails at once when none is open (nothing would free a descriptor).
func TestWhenDescriptorsFree(t *testing.T) {
	s := &Supervisor{}
	called := 0
	if _, err := s.whenDescriptorsFree(&call{}, unix.ENFILE, func() (int, error) { called++; return 7, nil }); !errors.Is(err, unix.ENFILE) || called != 0 {
		t.Fatalf("no relays: err %v after %d tries, want ENFILE at once", err, called)
	}

	s.relays.Store(1 << 20)
	tried := make(chan struct{})
	done := make(chan struct{})
	var fd int
	var err error
	go func() {
		defer close(done)
		fd, err = s.whenDescriptorsFree(&call{}, unix.EMFILE, func() (int, error) {
			close(tried)
			return 7, nil
		})
	}()
	// Relayed connections end, one a millisecond, until the call has tried again.
	for ended := false; !ended; {
		select {
		case <-tried:
			ended = true
		case <-time.After(time.Millisecond):
			s.relays.Add(-1)
		}
	}
	<-done
	if err != nil || fd != 7 {
		t.Fatalf("after a relay ended: fd %d, err %v; want 7, nil", fd, err)
	}
}
