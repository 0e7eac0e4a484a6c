package guestinit

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Console markers: the lines the daemon looks for in the serial log.
const (
	MarkerHostKey  = "BANGER-HOSTKEY"
	MarkerReady    = "BANGER-READY"
	MarkerPoweroff = "BANGER-POWEROFF"
)

const logPrefix = "banger-init: "

// console serialises whole lines to the guest console, so that log lines
// and markers written from several goroutines never interleave.
type console struct {
	mu sync.Mutex
	w  io.Writer // guarded by mu
}

// openConsole opens /dev/console for writing (never as our controlling
// terminal) and makes it the init's stdout and stderr, so that even a Go
// runtime crash report reaches the serial log. If it cannot be opened,
// stderr is used as it is.
func openConsole() *console {
	// unix.Open, not os.OpenFile: the descriptor must stay blocking, as
	// it becomes fd 1 and 2 and the runtime writes crash reports there.
	fd, err := unix.Open("/dev/console", unix.O_WRONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &console{w: os.Stderr}
	}
	_ = unix.Dup3(fd, 1, 0)
	_ = unix.Dup3(fd, 2, 0)
	return &console{w: os.NewFile(uintptr(fd), "/dev/console")}
}

// marker writes one marker line, e.g. "BANGER-READY 12".
func (c *console) marker(name string, args ...any) {
	line := name
	if len(args) > 0 {
		line += " " + fmt.Sprintln(args...)
	} else {
		line += "\n"
	}
	_, _ = c.Write([]byte(line))
}

// Write writes p as is, under the line lock.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

// prefixWriter prefixes each write (one slog record) with "banger-init: ".
type prefixWriter struct{ c *console }

func (w prefixWriter) Write(p []byte) (int, error) {
	if _, err := w.c.Write(append([]byte(logPrefix), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// newLogger logs on c: warnings and errors always, progress only in debug
// mode. Times are left out: the serial log has the kernel's.
func newLogger(c *console, debug bool) *slog.Logger {
	level := slog.LevelWarn
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(prefixWriter{c}, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}
