package cli

import (
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The local terminal while a guest's terminal owns it: raw mode, restored
// once, and the window size. isTerminal and withFd are in progress.go.

// rawTerminal is a terminal put in raw mode, and what it was before.
type rawTerminal struct {
	f     *os.File
	saved unix.Termios
	once  sync.Once
	err   error
}

// makeRaw puts the terminal f in raw mode: no echo, no line editing, no
// signals from keys (Ctrl-C, Ctrl-Z and Ctrl-\ become bytes for the
// guest), no translation of input or output. Restore undoes it.
func makeRaw(f *os.File) (*rawTerminal, error) {
	var saved *unix.Termios
	var err error
	if !withFd(f, func(fd int) { saved, err = unix.IoctlGetTermios(fd, unix.TCGETS) }) {
		return nil, errors.New("not a file descriptor")
	}
	if err != nil {
		return nil, err
	}
	raw := *saved
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	withFd(f, func(fd int) { err = unix.IoctlSetTermios(fd, unix.TCSETS, &raw) })
	if err != nil {
		return nil, err
	}
	return &rawTerminal{f: f, saved: *saved}, nil
}

// Restore puts the terminal back as makeRaw found it. Only the first call
// acts; later ones return its result.
func (t *rawTerminal) Restore() error {
	t.once.Do(func() {
		withFd(t.f, func(fd int) { t.err = unix.IoctlSetTermios(fd, unix.TCSETS, &t.saved) })
	})
	return t.err
}

// terminalSize is the terminal f's size; ok is false when f has none.
func terminalSize(f *os.File) (cols, rows int, ok bool) {
	var ws *unix.Winsize
	var err error
	if !withFd(f, func(fd int) { ws, err = unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ) }) || err != nil || ws.Col == 0 || ws.Row == 0 {
		return 0, 0, false
	}
	return int(ws.Col), int(ws.Row), true
}
