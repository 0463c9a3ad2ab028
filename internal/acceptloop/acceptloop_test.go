package acceptloop

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestRetry(t *testing.T) {
	var b Backoff
	emfile := &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	if !b.Retry(emfile) || b.delay != minDelay {
		t.Fatalf("EMFILE: want a retry after %v, delay %v", minDelay, b.delay)
	}
	if !b.Retry(fmt.Errorf("wrapped: %w", syscall.ENFILE)) || b.delay != 2*minDelay {
		t.Fatalf("ENFILE: want the delay doubled, got %v", b.delay)
	}
	if !b.Retry(nil) || b.delay != 0 {
		t.Fatalf("success must reset the delay, got %v", b.delay)
	}
	if b.Retry(net.ErrClosed) {
		t.Fatal("a closed listener must end the loop")
	}
	if b.Retry(syscall.EINVAL) {
		t.Fatal("EINVAL is not temporary")
	}
	b.delay = maxDelay
	if !b.Retry(syscall.EMFILE) || b.delay != maxDelay {
		t.Fatalf("delay must stay at most %v, got %v", maxDelay, b.delay)
	}
}
