package fcshim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
)

// VMMVersion is the Firecracker release whose API the shim follows.
const VMMVersion = "1.16.1"

// defaultMaxPayload is Firecracker's HTTP_MAX_PAYLOAD_SIZE, the default of
// --http-api-max-payload-size.
const defaultMaxPayload = 51200

// Time allowed to calls into the booted VM.
const (
	bootTimeout = 60 * time.Second // InstanceStart: QEMU up and answering QMP
	cadTimeout  = 5 * time.Second  // SendCtrlAltDel: one QMP command
)

// Booter boots the configuration InstanceStart hands it.
type Booter interface {
	Boot(ctx context.Context, cfg BootConfig) (VM, error)
}

// VM is a booted guest.
type VM interface {
	// SendCtrlAltDel presses ctrl-alt-delete on the guest's keyboard
	// controller.
	SendCtrlAltDel(ctx context.Context) error
	// Kill stops the VM at once; Done tells when it has.
	Kill() error
	// Done is closed once the VM has ended and its console output has been
	// written out.
	Done() <-chan struct{}
	// Wait blocks until Done and returns the VMM's exit status and, unless
	// it is 0, an error saying how it ended.
	Wait() (int, error)
}

// Options configure a Server.
type Options struct {
	// ID is the instance id (--id), reported by GET /.
	ID string
	// Booter boots the VM on InstanceStart.
	Booter Booter
	// CheckTAP opens the TAP device a network interface names, as
	// Firecracker does when the interface is added; nil means openTAP.
	CheckTAP func(name string) error
	// MaxPayload is the largest request body accepted
	// (--http-api-max-payload-size); 0 means Firecracker's 51200.
	MaxPayload int64
	// Log receives the shim's own log lines until PUT /logger names a
	// file; nil discards them.
	Log io.Writer
	// Root, when set, is the chroot every path of the API is resolved in
	// (see EnvChroot).
	Root string
}

// Server serves Firecracker's API for one instance. It handles one request
// at a time, as Firecracker's single API thread does.
type Server struct {
	id         string
	booter     Booter
	checkTAP   func(string) error
	maxPayload int64
	root       string // see Options.Root
	// tapFiles are the TAPs opened in a chroot (openJailTAP), in NIC
	// order; guarded by mu (the handlers run under it).
	tapFiles []*os.File

	booted chan struct{} // closed once InstanceStart has booted the VM

	// mu serialises requests (Firecracker's API thread handles one at a
	// time) and guards the fields below. It is held across InstanceStart's
	// boot, which is bounded by bootTimeout, and SendCtrlAltDel's QMP
	// command; nothing else waits under it.
	mu          sync.Mutex
	started     bool               // guarded by mu: InstanceStart has booted the VM
	stopped     bool               // guarded by mu: Stop was called
	vm          VM                 // guarded by mu: set when started
	bootSrc     *bootSource        // guarded by mu
	drives      []drive            // guarded by mu: Firecracker's order, the root drive first
	nics        []networkInterface // guarded by mu: Firecracker's order
	machine     machineConfig      // guarded by mu
	log         io.Writer          // guarded by mu: the shim's log (PUT /logger replaces it)
	logFile     *os.File           // guarded by mu: the file PUT /logger opened, if any
	metricsFile *os.File           // guarded by mu: the file PUT /metrics opened, if any
}

// NewServer returns a server for a fresh, unconfigured instance.
func NewServer(opts Options) *Server {
	s := &Server{
		id:         opts.ID,
		booter:     opts.Booter,
		checkTAP:   opts.CheckTAP,
		maxPayload: opts.MaxPayload,
		root:       opts.Root,
		booted:     make(chan struct{}),
		// Firecracker's defaults (MachineConfig::default).
		machine: machineConfig{VCPUCount: 1, MemSizeMiB: 128, HugePages: "None"},
		log:     opts.Log,
	}
	switch {
	case s.checkTAP != nil:
	case s.root != "":
		s.checkTAP = s.openJailTAP
	default:
		s.checkTAP = openTAP
	}
	if s.maxPayload <= 0 {
		s.maxPayload = defaultMaxPayload
	}
	if s.log == nil {
		s.log = io.Discard
	}
	return s
}

// Booted is closed once InstanceStart has booted the VM.
func (s *Server) Booted() <-chan struct{} { return s.booted }

// VM is the booted VM, or nil before InstanceStart.
func (s *Server) VM() VM {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vm
}

// Stop refuses further requests and kills the VM, if any. It waits for a
// request in progress (an InstanceStart) to finish first.
func (s *Server) Stop() {
	s.mu.Lock()
	s.stopped = true
	vm := s.vm
	s.mu.Unlock()
	if vm != nil {
		vm.Kill()
	}
}

// Close releases the files PUT /logger and PUT /metrics opened.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range append([]*os.File{s.logFile, s.metricsFile}, s.tapFiles...) {
		if f != nil {
			f.Close()
		}
	}
	s.logFile, s.metricsFile, s.tapFiles = nil, nil, nil
}

// logfLocked writes one line to the shim's log.
func (s *Server) logfLocked(format string, args ...any) {
	fmt.Fprintf(s.log, "[fcshim:%s] %s\n", s.id, fmt.Sprintf(format, args...))
}

// reply is an HTTP answer; a nil body is sent as no body at all.
type reply struct {
	status int
	body   any
}

var noContent = reply{status: http.StatusNoContent}

func okJSON(body any) reply { return reply{status: http.StatusOK, body: body} }

// fault is a 400 with Firecracker's error body (definition Error).
func fault(format string, args ...any) reply {
	return reply{status: http.StatusBadRequest, body: map[string]string{"fault_message": fmt.Sprintf(format, args...)}}
}

// notEmulated refuses a call the real Firecracker would handle but the
// shim does not reproduce.
func notEmulated(what string) reply {
	return fault("fcshim (a test-only stand-in for Firecracker) does not emulate %s", what)
}

// The messages of Firecracker's VmmActionError variants for calls made in
// the wrong state (src/vmm/src/rpc_interface.rs).
const (
	errPostBoot = "The requested operation is not supported after starting the microVM."
	errPreBoot  = "The requested operation is not supported before starting the microVM."
	// Adding a drive or NIC after boot is PCI hotplug, refused without
	// --enable-pci (VmmActionError::PciNotEnabled).
	errNoPCI = "PCI is not enabled"
)

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rep := s.handle(r)
	w.Header().Set("Server", "Firecracker API")
	if rep.body == nil {
		w.WriteHeader(rep.status)
		return
	}
	data, _ := json.Marshal(rep.body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(rep.status)
	w.Write(data)
}

// handle routes a request the way Firecracker's ParsedRequest::try_from
// does (src/firecracker/src/api_server/parsed_request.rs): on the method,
// the first element of the path and whether there is a body.
func (s *Server) handle(r *http.Request) reply {
	// Firecracker's HTTP layer (micro_http) knows GET, PUT and PATCH only,
	// and bodies with a Content-Length only. It answers these with a 400
	// and {"error": ...}; the shim uses fault_message like every other
	// refusal.
	if len(r.TransferEncoding) > 0 {
		return fault("Invalid header. Reason: Unsupported feature. Key: Transfer-Encoding; Value: %s", strings.Join(r.TransferEncoding, ","))
	}
	method := r.Method
	switch method {
	case http.MethodGet, http.MethodPut, http.MethodPatch:
	default:
		return fault("Invalid HTTP Method: Unsupported HTTP method.")
	}
	if r.ContentLength > s.maxPayload {
		return fault("Request payload with size %d is larger than the limit of %d allowed by server.", r.ContentLength, s.maxPayload)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.maxPayload+1))
	if err != nil {
		return fault("Invalid request.")
	}
	if int64(len(body)) > s.maxPayload {
		return fault("Request payload with size %d is larger than the limit of %d allowed by server.", len(body), s.maxPayload)
	}
	hasBody := len(body) > 0

	// "/drives/root" -> "drives", "root"; like Rust's split_terminator, a
	// trailing '/' adds no empty element.
	tokens := strings.Split(strings.TrimLeft(r.URL.EscapedPath(), "/"), "/")
	if len(tokens) > 1 && tokens[len(tokens)-1] == "" {
		tokens = tokens[:len(tokens)-1]
	}
	path, next := tokens[0], ""
	hasNext := len(tokens) > 1
	if hasNext {
		next = tokens[1]
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fault("fcshim is shutting down")
	}
	rep := s.routeLocked(method, path, next, hasNext, hasBody, body)
	s.logfLocked("%s %s -> %d%s", method, r.URL.EscapedPath(), rep.status, faultText(rep))
	return rep
}

func faultText(rep reply) string {
	if m, ok := rep.body.(map[string]string); ok {
		return ": " + m["fault_message"]
	}
	return ""
}

func (s *Server) routeLocked(method, path, next string, hasNext, hasBody bool, body []byte) reply {
	switch method {
	case http.MethodGet:
		if hasBody {
			return fault("GET request cannot have a body.")
		}
		switch {
		case path == "":
			st := stateNotStarted
			if s.started {
				st = stateRunning
			}
			return okJSON(instanceInfo{AppName: "Firecracker", ID: s.id, State: st, VMMVersion: VMMVersion})
		case path == "version":
			return okJSON(map[string]string{"firecracker_version": VMMVersion})
		case path == "machine-config":
			return okJSON(s.machine)
		case path == "vm" && next == "config", path == "balloon", path == "mmds",
			path == "hotplug" && next == "memory":
			return notEmulated("GET /" + path)
		}
	case http.MethodPut:
		if !hasBody {
			return fault("Empty PUT request.")
		}
		switch path {
		case "actions":
			return s.putActionLocked(body)
		case "boot-source":
			return s.putBootSourceLocked(body)
		case "drives":
			return s.putDriveLocked(next, hasNext, body)
		case "logger":
			return s.putLoggerLocked(body)
		case "machine-config":
			return s.putMachineConfigLocked(body)
		case "metrics":
			return s.putMetricsLocked(body)
		case "network-interfaces":
			return s.putNetworkInterfaceLocked(next, hasNext, body)
		case "balloon", "cpu-config", "pmem", "serial", "mmds", "snapshot", "vsock", "entropy":
			return notEmulated("PUT /" + path)
		case "hotplug":
			if next == "memory" {
				return notEmulated("PUT /hotplug/memory")
			}
		}
	case http.MethodPatch:
		if path == "balloon" {
			return notEmulated("PATCH /balloon")
		}
		if !hasBody {
			return fault("Empty PATCH request.")
		}
		switch {
		case path == "drives", path == "machine-config", path == "mmds", path == "network-interfaces", path == "vm",
			path == "hotplug" && next == "memory":
			return notEmulated("PATCH /" + path)
		}
	}
	// RequestError::InvalidPathMethod.
	return fault("Invalid request method and/or path: %s %s.", method, path)
}

// decode validates body against sc and decodes it into v. A refusal is
// RequestError::SerdeJson's message.
func decode(sc *schema, body []byte, v any) (reply, bool) {
	if err := sc.validate(body); err != nil {
		return fault("An error occurred when deserializing the json body of a request: %v.", err), false
	}
	if err := json.Unmarshal(body, v); err != nil {
		// The schema accepted what the struct does not: a bug in the shim.
		return fault("fcshim: schema %s accepted a body its struct refuses: %v", sc.definition, err), false
	}
	return reply{}, true
}

// checkedID is parsed_request.rs's checked_id: a resource id from the path
// is not empty and holds only alphanumerics and '_'.
func checkedID(id string, present bool) (reply, bool) {
	if !present || id == "" {
		return fault("The ID cannot be empty."), false
	}
	for _, c := range id {
		if c != '_' && !unicode.IsLetter(c) && !unicode.IsNumber(c) {
			return fault("API Resource IDs can only contain alphanumeric characters and underscores."), false
		}
	}
	return reply{}, true
}

// osError formats an I/O error the way Rust's io::Error displays an errno:
// "No such file or directory (os error 2)".
func osError(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err.Error()
	}
	msg := errno.Error()
	if msg != "" {
		msg = strings.ToUpper(msg[:1]) + msg[1:]
	}
	return fmt.Sprintf("%s (os error %d)", msg, int(errno))
}
