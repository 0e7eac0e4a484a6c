package cli

import (
	"os"
	"testing"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// openPTY is a pseudo-terminal pair, closed when the test ends.
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	return ptmx, tty
}

func termios(t *testing.T, f *os.File) unix.Termios {
	t.Helper()
	var tio *unix.Termios
	var err error
	withFd(f, func(fd int) { tio, err = unix.IoctlGetTermios(fd, unix.TCGETS) })
	if err != nil {
		t.Fatalf("TCGETS: %v", err)
	}
	return *tio
}

func TestShellRawModeAndRestore(t *testing.T) {
	_, tty := openPTY(t)
	before := termios(t, tty)
	if before.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) == 0 {
		t.Fatalf("a new pty is not cooked (lflag %#x); the test proves nothing", before.Lflag)
	}
	raw, err := makeRaw(tty)
	if err != nil {
		t.Fatal(err)
	}
	got := termios(t, tty)
	for _, c := range []struct {
		name  string
		flags uint32
		off   uint32
	}{
		{"lflag ECHO|ICANON|ISIG|IEXTEN", got.Lflag, unix.ECHO | unix.ICANON | unix.ISIG | unix.IEXTEN},
		{"iflag ICRNL|IXON|ISTRIP", got.Iflag, unix.ICRNL | unix.IXON | unix.ISTRIP},
		{"oflag OPOST", got.Oflag, unix.OPOST},
	} {
		if c.flags&c.off != 0 {
			t.Errorf("raw mode left %s set: %#x", c.name, c.flags&c.off)
		}
	}
	if got.Cflag&unix.CSIZE != unix.CS8 || got.Cc[unix.VMIN] != 1 || got.Cc[unix.VTIME] != 0 {
		t.Errorf("raw mode: cflag %#x, VMIN %d, VTIME %d; want CS8, 1, 0", got.Cflag, got.Cc[unix.VMIN], got.Cc[unix.VTIME])
	}
	if err := raw.Restore(); err != nil {
		t.Fatal(err)
	}
	if after := termios(t, tty); after != before {
		t.Errorf("restored termios differs:\nbefore %+v\nafter  %+v", before, after)
	}
	// A second Restore does nothing, even after the terminal changed.
	if _, err := makeRaw(tty); err != nil {
		t.Fatal(err)
	}
	if err := raw.Restore(); err != nil {
		t.Fatal(err)
	}
	if termios(t, tty).Lflag&unix.ICANON != 0 {
		t.Error("a second Restore acted again")
	}
}

func TestShellTerminalSize(t *testing.T) {
	ptmx, tty := openPTY(t)
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 101, Rows: 33}); err != nil {
		t.Fatal(err)
	}
	if cols, rows, ok := terminalSize(tty); !ok || cols != 101 || rows != 33 {
		t.Errorf("terminalSize = %d, %d, %v; want 101, 33, true", cols, rows, ok)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, _, ok := terminalSize(r); ok {
		t.Error("terminalSize of a pipe is ok")
	}
	if _, err := makeRaw(r); err == nil {
		t.Error("makeRaw of a pipe succeeded")
	}
}
