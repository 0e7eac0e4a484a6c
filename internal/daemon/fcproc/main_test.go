package fcproc

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeFCEnv makes the test binary act as Firecracker (see fakeFirecracker)
// when Start runs it as Config.Binary.
const fakeFCEnv = "BANGER_FCPROC_TEST_FAKE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeFCEnv); mode != "" {
		os.Exit(fakeFirecracker(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeFirecracker is a stand-in for Firecracker, driven by mode:
//
//	exit-early  print an error like Firecracker's and exit 1
//	no-api      never open the API socket
//	poweroff    serve the API; SendCtrlAltDel after InstanceStart exits 0
//	ignore-cad  serve the API; SendCtrlAltDel does nothing; SIGTERM kills
//	stubborn    like ignore-cad, and SIGTERM is ignored too
//
// Like Firecracker it takes --api-sock PATH and --id ID, refuses other
// arguments (exit 153), prints a line to stdout (where the serial console
// goes) and refuses SendCtrlAltDel before InstanceStart.
func fakeFirecracker(mode string, args []string) int {
	var sock, id string
	for i := 0; i < len(args); i++ {
		if i+1 >= len(args) {
			fmt.Fprintf(os.Stderr, "Error: the argument '%s' requires a value\n", args[i])
			return 153
		}
		switch args[i] {
		case "--api-sock":
			sock = args[i+1]
		case "--id":
			id = args[i+1]
		default:
			fmt.Fprintf(os.Stderr, "Error: Found argument '%s' which wasn't expected\n", args[i])
			return 153
		}
		i++
	}
	fmt.Printf("fake firecracker: mode %s id %s\n", mode, id)
	switch mode {
	case "exit-early":
		fmt.Fprintln(os.Stderr, "Error: RunWithApi(FailedToBindSocket(\"boom\"))")
		return 1
	case "no-api":
		time.Sleep(time.Hour)
		return 0
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 1
	}
	var mu sync.Mutex
	state := StateNotStarted
	fault := func(w http.ResponseWriter, msg string) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodGet && r.URL.Path == "/" {
			json.NewEncoder(w).Encode(InstanceInfo{AppName: "Firecracker", ID: id, State: state, VMMVersion: "0.0.0-fake"})
			return
		}
		if r.Method != http.MethodPut {
			fault(w, "Invalid request method and/or path")
			return
		}
		if r.URL.Path != "/actions" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		var a InstanceActionInfo
		json.Unmarshal(body, &a)
		switch {
		case a.ActionType == ActionInstanceStart && state == StateNotStarted:
			state = StateRunning
		case a.ActionType == ActionSendCtrlAltDel && state == StateNotStarted:
			fault(w, "The requested operation is not supported before starting the microVM.")
			return
		case a.ActionType == ActionSendCtrlAltDel && mode == "poweroff":
			go func() { time.Sleep(20 * time.Millisecond); os.Exit(0) }()
		}
		w.WriteHeader(http.StatusNoContent)
	})
	http.Serve(ln, h)
	return 1
}
