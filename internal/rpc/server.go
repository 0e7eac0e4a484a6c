package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("rpc: server closed")

// Server accepts connections on unix listeners and serves JSON-RPC calls.
type Server struct {
	Handler Handler
	// Authorize, if set, is asked about every new connection; a non-nil
	// error closes the connection before anything is read from it.
	Authorize func(PeerCred) error
	// MapError turns a handler's error into a wire error. Default:
	// ErrorFromErr.
	MapError func(error) *Error
	// MaxMessageBytes bounds one incoming line. Default 1 MiB.
	MaxMessageBytes int
	// MaxInFlight bounds concurrent calls per connection; further requests
	// wait (backpressure). Default 64.
	MaxInFlight int
	// WriteTimeout bounds one write to a client that stopped reading.
	// Default 30s.
	WriteTimeout time.Duration
	Logger       *slog.Logger

	// mu guards the fields below. Leaf lock: never held across I/O.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	closing   bool
	connWG    sync.WaitGroup
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Server) maxMessage() int {
	if s.MaxMessageBytes > 0 {
		return s.MaxMessageBytes
	}
	return DefaultMaxMessageBytes
}

func (s *Server) maxInFlight() int {
	if s.MaxInFlight > 0 {
		return s.MaxInFlight
	}
	return 64
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout > 0 {
		return s.WriteTimeout
	}
	return 30 * time.Second
}

func (s *Server) mapError(err error) *Error {
	if s.MapError != nil {
		return s.MapError(err)
	}
	return ErrorFromErr(err)
}

// Serve accepts connections on l until Shutdown, then returns
// ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if s.retired(l) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.startConn(nc)
	}
}

// CloseListener stops accepting on l alone: its Serve returns nil.
// Connections it accepted go on. (The daemon retires a listener whose
// socket file was deleted once it listens on a new one.)
func (s *Server) CloseListener(l net.Listener) error {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
	return l.Close()
}

// retired reports whether l was given to Serve and since removed by
// CloseListener.
func (s *Server) retired(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.listeners[l]
	return !ok
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) startConn(nc net.Conn) {
	peer, err := peerCred(nc)
	if err != nil {
		s.logger().Warn("rejecting connection: no peer credentials", "err", err)
		nc.Close()
		return
	}
	if s.Authorize != nil {
		if err := s.Authorize(peer); err != nil {
			s.logger().Warn("rejecting unauthorised connection", "pid", peer.PID, "uid", peer.UID, "gid", peer.GID, "err", err)
			nc.Close()
			return
		}
	}
	c := newServerConn(s, nc, peer)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if s.conns == nil {
		s.conns = make(map[*serverConn]struct{})
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.connWG.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

// Shutdown stops accepting, stops reading new requests, and waits for
// in-flight calls to finish. When ctx ends first, the remaining calls'
// contexts are cancelled and Shutdown waits for their handlers to return
// before it returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.stopReading()
	}
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.cancel()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// ConnCount reports the number of open connections (for tests and status).
func (s *Server) ConnCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func peerCred(nc net.Conn) (PeerCred, error) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return PeerCred{}, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return PeerCred{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return PeerCred{}, err
	}
	if serr != nil {
		return PeerCred{}, serr
	}
	return PeerCred{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}
