package torstart

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// flock opens path (creating it 0600) and takes an flock on it, LOCK_EX or LOCK_SH, waiting until
// ctx is done. The lock is held until the file is closed. Locks are per open file, so two
// goroutines of one process exclude each other as two processes do.
func flock(ctx context.Context, path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("torstart: lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("torstart: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("torstart: waiting for the lock %s (another torsocks starting tor): %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
