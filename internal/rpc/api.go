package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Method names. The daemon's dispatch switch (internal/daemon/daemon.go)
// is the one place that maps them to code.
const (
	MethodPing     = "daemon.ping"
	MethodInfo     = "daemon.info"
	MethodVMList   = "vm.list"
	MethodOpList   = "op.list"
	MethodOpGet    = "op.get"
	MethodOpWatch  = "op.watch"
	MethodOpCancel = "op.cancel"
)

// EventProgress is the stream event kind op.watch sends; its data is an Op.
const EventProgress = "progress"

// PingResult answers daemon.ping.
type PingResult struct {
	PID int `json:"pid"`
}

// InfoResult answers daemon.info.
type InfoResult struct {
	Version       string    `json:"version"`
	Commit        string    `json:"commit"`
	GoVersion     string    `json:"go_version"`
	PID           int       `json:"pid"`
	Root          string    `json:"root"`
	Socket        string    `json:"socket"`
	ConfigFile    string    `json:"config_file,omitempty"`
	SchemaVersion int       `json:"schema_version"`
	StartedAt     time.Time `json:"started_at"`
}

// VM is one VM as listings show it.
type VM struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	State       string    `json:"state"`
	StateReason string    `json:"state_reason,omitempty"`
	Image       string    `json:"image"`
	Kernel      string    `json:"kernel,omitempty"`
	IP          string    `json:"ip,omitempty"`
	DNSName     string    `json:"dns_name,omitempty"`
	VMM         string    `json:"vmm,omitempty"`
	Disk        string    `json:"disk,omitempty"` // the disk strategy
	VCPUs       int       `json:"vcpus"`
	MemoryMiB   int       `json:"memory_mib"`
	DiskBytes   int64     `json:"disk_bytes"`
	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	// HostKey is the running guest's SSH host key (authorized_keys
	// format), as its init announced it.
	HostKey string `json:"host_key,omitempty"`
}

// VMListResult answers vm.list.
type VMListResult struct {
	VMs []VM `json:"vms"`
}

// OpRef names one async operation.
type OpRef struct {
	ID string `json:"id"`
}

// Op is an async operation's status, as op.get returns it and op.watch
// streams it.
type Op struct {
	ID         string          `json:"id"`
	Kind       string          `json:"kind"`
	Target     string          `json:"target"`
	State      string          `json:"state"`
	Progress   Progress        `json:"progress"`
	Error      string          `json:"error,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	StartedAt  time.Time       `json:"started_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	FinishedAt time.Time       `json:"finished_at,omitzero"`
	Seq        uint64          `json:"seq"`
}

// Done reports whether the op finished (in any way).
func (o Op) Done() bool { return o.State != "" && o.State != "running" }

// Progress is where an operation is: a named phase, a count of units done
// (bytes when Unit is "bytes"), and per-item progress (image layers).
type Progress struct {
	Phase   string         `json:"phase,omitempty"`
	Message string         `json:"message,omitempty"`
	Done    int64          `json:"done,omitempty"`
	Total   int64          `json:"total,omitempty"`
	Unit    string         `json:"unit,omitempty"`
	Items   []ItemProgress `json:"items,omitempty"`
}

// ItemProgress is one item's progress within an operation.
type ItemProgress struct {
	Name  string `json:"name"`
	State string `json:"state,omitempty"`
	Done  int64  `json:"done,omitempty"`
	Total int64  `json:"total,omitempty"`
}

// OpListResult answers op.list.
type OpListResult struct {
	Ops []Op `json:"ops"`
}

// Typed client methods.

func (c *Client) Ping(ctx context.Context) (PingResult, error) {
	var r PingResult
	return r, c.Call(ctx, MethodPing, nil, &r)
}

func (c *Client) Info(ctx context.Context) (InfoResult, error) {
	var r InfoResult
	return r, c.Call(ctx, MethodInfo, nil, &r)
}

func (c *Client) ListVMs(ctx context.Context) ([]VM, error) {
	var r VMListResult
	return r.VMs, c.Call(ctx, MethodVMList, nil, &r)
}

func (c *Client) ListOps(ctx context.Context) ([]Op, error) {
	var r OpListResult
	return r.Ops, c.Call(ctx, MethodOpList, nil, &r)
}

func (c *Client) GetOp(ctx context.Context, id string) (Op, error) {
	var r Op
	return r, c.Call(ctx, MethodOpGet, OpRef{ID: id}, &r)
}

func (c *Client) CancelOp(ctx context.Context, id string) error {
	return c.Call(ctx, MethodOpCancel, OpRef{ID: id}, nil)
}

// WatchOp streams the op's status to onUpdate until it finishes and returns
// the final status. Ending ctx stops watching; it does not cancel the op.
func (c *Client) WatchOp(ctx context.Context, id string, onUpdate func(Op)) (Op, error) {
	var final Op
	err := c.Stream(ctx, MethodOpWatch, OpRef{ID: id}, func(ev StreamEvent) error {
		if ev.Kind != EventProgress {
			return nil
		}
		var op Op
		if err := json.Unmarshal(ev.Data, &op); err != nil {
			return fmt.Errorf("decode progress event: %w", err)
		}
		if onUpdate != nil {
			onUpdate(op)
		}
		return nil
	}, &final)
	return final, err
}

// Image and kernel methods.
const (
	MethodImagePull     = "image.pull"
	MethodImageImport   = "image.import"
	MethodImageRegister = "image.register"
	MethodImageList     = "image.list"
	MethodImageShow     = "image.show"
	MethodImageRemove   = "image.rm"

	MethodKernelImport = "kernel.import"
	MethodKernelFetch  = "kernel.fetch"
	MethodKernelList   = "kernel.list"
	MethodKernelShow   = "kernel.show"
	MethodKernelRemove = "kernel.rm"
)

// RegistryAuth is a registry credential the CLI resolved from its user's
// docker config (or credential helper). The daemon uses it for one pull
// and keeps it nowhere.
type RegistryAuth struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"`
	IdentityToken string `json:"identity_token,omitempty"`
	RegistryToken string `json:"registry_token,omitempty"`
}

// ImagePullParams asks for image.pull.
type ImagePullParams struct {
	Ref  string        `json:"ref"`
	Name string        `json:"name,omitempty"` // default: derived from Ref
	Auth *RegistryAuth `json:"auth,omitempty"`
}

// ImageImportParams asks for image.import: Path is an absolute path to a
// rootfs tarball (plain, gzip or zstd) or a directory, read with the
// caller's permissions.
type ImageImportParams struct {
	Path string `json:"path"`
	Name string `json:"name"`
}

// ImageRegisterParams asks for image.register: an existing ext4 file,
// copied into banger's root with the caller's permissions.
type ImageRegisterParams struct {
	Rootfs string `json:"rootfs"`
	Name   string `json:"name"`
	Kernel string `json:"kernel,omitempty"` // default kernel for VMs of this image
}

// OpStarted answers a method that started an async operation.
type OpStarted struct {
	OpID  string `json:"op_id"`
	Image *Image `json:"image,omitempty"`
}

// NameRef names an image, kernel or VM by name or id (prefix).
type NameRef struct {
	Ref string `json:"ref"`
}

// ImageConfig is what the image asks to run, from its OCI config.
type ImageConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Image is one image as listings and show present it.
type Image struct {
	ID            string      `json:"id"`
	Name          string      `json:"name"`
	State         string      `json:"state"`
	StateReason   string      `json:"state_reason,omitempty"`
	Source        string      `json:"source"`
	SourceRef     string      `json:"source_ref,omitempty"`
	Digest        string      `json:"digest,omitempty"`
	SizeBytes     int64       `json:"size_bytes"`
	Config        ImageConfig `json:"config"`
	DefaultKernel string      `json:"default_kernel,omitempty"`
	Path          string      `json:"path,omitempty"`
	UsedBy        []string    `json:"used_by,omitempty"`
	CreatedAt     time.Time   `json:"created_at"`
}

// ImageListResult answers image.list.
type ImageListResult struct {
	Images []Image `json:"images"`
}

// KernelImportParams asks for kernel.import: absolute paths read with the
// caller's permissions.
type KernelImportParams struct {
	Vmlinux string `json:"vmlinux"`
	Initrd  string `json:"initrd,omitempty"`
	Name    string `json:"name"`
	Default bool   `json:"default,omitempty"`
}

// KernelFetchParams asks for kernel.fetch: a vmlinux or a tar bundle
// (vmlinux and optional initrd) over http(s) or file://.
type KernelFetchParams struct {
	URL     string `json:"url"`
	SHA256  string `json:"sha256,omitempty"`
	Name    string `json:"name"`
	Default bool   `json:"default,omitempty"`
}

// Kernel is one guest kernel.
type Kernel struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Version   string    `json:"version,omitempty"`
	Source    string    `json:"source,omitempty"`
	HasInitrd bool      `json:"has_initrd"`
	Default   bool      `json:"default"`
	SizeBytes int64     `json:"size_bytes"`
	UsedBy    []string  `json:"used_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// KernelListResult answers kernel.list.
type KernelListResult struct {
	Kernels []Kernel `json:"kernels"`
}

// VM methods.
const (
	MethodVMCreate = "vm.create"
	MethodVMExec   = "vm.exec"
	MethodVMRemove = "vm.rm"
	MethodVMShow   = "vm.show"
)

// Exec stream event kinds (see the package doc).
const (
	EventStdout = "stdout"
	EventStderr = "stderr"
	InputStdin  = "stdin"
	InputEOF    = "eof"
	InputResize = "resize"
	InputSignal = "signal"
)

// VMCreateParams asks for vm.create. Zero fields take the config's
// defaults (vm_vcpus, vm_memory_mib; the image's size for the disk).
type VMCreateParams struct {
	Name      string `json:"name,omitempty"`
	Image     string `json:"image"`
	Kernel    string `json:"kernel,omitempty"`
	VCPUs     int    `json:"vcpus,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskGiB   int    `json:"disk_gib,omitempty"`
	// Entrypoint has the guest init start the image's own entrypoint+cmd
	// at boot (its output goes to the serial console).
	Entrypoint bool `json:"entrypoint,omitempty"`
}

// VMStarted answers vm.create: the operation that boots the VM.
type VMStarted struct {
	OpID string `json:"op_id"`
	VM   VM     `json:"vm"`
}

// VMExecParams asks for vm.exec: Argv runs exactly (no shell in between).
type VMExecParams struct {
	VM      string            `json:"vm"`
	Argv    []string          `json:"argv"`
	Env     map[string]string `json:"env,omitempty"`
	TTY     bool              `json:"tty,omitempty"`
	Term    string            `json:"term,omitempty"`
	Cols    int               `json:"cols,omitempty"`
	Rows    int               `json:"rows,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	User    string            `json:"user,omitempty"`
}

// ExecResize is the data of a resize input event.
type ExecResize struct {
	Cols int `json:"cols"`
	Rows int `json:"rows"`
}

// VMExecResult answers vm.exec.
type VMExecResult struct {
	ExitCode int    `json:"exit_code"`
	Signal   string `json:"signal,omitempty"`
}

// VMRemoveParams asks for vm.rm.
type VMRemoveParams struct {
	Ref   string `json:"ref"`
	Force bool   `json:"force,omitempty"`
}

// More VM methods.
const (
	MethodVMStart   = "vm.start"
	MethodVMStop    = "vm.stop"
	MethodVMRestart = "vm.restart"
	MethodVMLogs    = "vm.logs"
)

// VMStopParams asks for vm.stop or vm.restart: the guest gets
// TimeoutSeconds (default 10) to power off before its VMM is killed.
type VMStopParams struct {
	Ref            string `json:"ref"`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty"`
}

// VMLogsParams asks for vm.logs: the serial console, streamed as stdout
// events; Follow keeps streaming until the caller goes away.
type VMLogsParams struct {
	Ref    string `json:"ref"`
	Follow bool   `json:"follow,omitempty"`
}

// MethodVMSet changes a VM's resources, applied at its next start.
const MethodVMSet = "vm.set"

// VMSetParams asks for vm.set; zero fields are left as they are.
type VMSetParams struct {
	Ref       string `json:"ref"`
	VCPUs     int    `json:"vcpus,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskGiB   int    `json:"disk_gib,omitempty"`
}

// MethodImagePromote makes a stopped VM's disk an image.
const MethodImagePromote = "image.promote"

// ImagePromoteParams asks for image.promote.
type ImagePromoteParams struct {
	VM   string `json:"vm"`
	Name string `json:"name"`
}

// MethodVMProxy connects the caller to a running guest's SSH port through
// the daemon: a stream whose stdout events are the guest's bytes and whose
// stdin/eof input events are the caller's.
const MethodVMProxy = "vm.proxy"

// MethodReconcile lists every host object banger made (its ledger), each
// with the owner its name or command line records, and removes the
// orphans, those no record owns, unless DryRun (`banger doctor --fix
// [--dry-run]`).
const MethodReconcile = "daemon.reconcile"

// ReconcileParams are daemon.reconcile's parameters.
type ReconcileParams struct {
	DryRun bool `json:"dry_run,omitempty"`
}

// HostObject is one host object banger made.
type HostObject struct {
	Kind  string `json:"kind"`  // tap, vmm, vm-dir, jail, loop, dm, nft-table
	Name  string `json:"name"`  // device or table name, PID, or path
	Owner string `json:"owner"` // "vm:ID", "image:ID", "kernel:ID", "op", "daemon", or "" when none
	// Orphan: no record owns it; Why says how that was decided.
	Orphan bool   `json:"orphan"`
	Why    string `json:"why,omitempty"`
	// Removed is set when this call removed it; Error when it could not.
	Removed bool   `json:"removed,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ReconcileResult is daemon.reconcile's result.
type ReconcileResult struct {
	Objects []HostObject `json:"objects"`
	DryRun  bool         `json:"dry_run"`
}

// Workspace methods: a checkout into a running guest, and the guest's work
// back as a branch (docs/rpc.md).
const (
	MethodWorkspacePrepare = "workspace.prepare"
	MethodWorkspaceExport  = "workspace.export"
)

// WorkspacePrepareParams asks for workspace.prepare. Path is absolute, on
// the caller's host; it is read as the caller. Dest defaults to
// /workspace. A second prepare of the same checkout into the same Dest
// sends only what changed since the first, unless Full.
type WorkspacePrepareParams struct {
	VM   string `json:"vm"`
	Path string `json:"path"`
	Dest string `json:"dest,omitempty"`
	Full bool   `json:"full,omitempty"`
}

// WorkspacePrepareResult answers workspace.prepare.
type WorkspacePrepareResult struct {
	VM       string `json:"vm"`
	HostPath string `json:"host_path"` // the checkout's root (or the plain directory)
	Dest     string `json:"dest"`
	IsGit    bool   `json:"is_git"`
	Base     string `json:"base,omitempty"`
	Branch   string `json:"branch,omitempty"`
	Detached bool   `json:"detached,omitempty"`
	// Incremental: only what changed since the previous prepare was sent.
	Incremental bool     `json:"incremental"`
	Files       int      `json:"files"`      // entries the guest now holds
	Sent        int      `json:"sent"`       // entries sent by this prepare
	SentBytes   int64    `json:"sent_bytes"` // content bytes among them
	WireBytes   int64    `json:"wire_bytes"` // the stream's bytes (archive framing, compression)
	Deleted     int      `json:"deleted"`    // paths removed in the guest
	Dirty       int      `json:"dirty"`      // tracked files differing from HEAD
	Untracked   int      `json:"untracked"`  // untracked, not ignored files
	Notes       []string `json:"notes,omitempty"`
}

// WorkspaceExportParams asks for workspace.export. Branch defaults to
// banger/<vm name>. Patch, an absolute path on the caller's host, gets a
// patch instead of a branch being made (written as the caller).
type WorkspaceExportParams struct {
	VM     string `json:"vm"`
	Branch string `json:"branch,omitempty"`
	Force  bool   `json:"force,omitempty"`
	Patch  string `json:"patch,omitempty"`
}

// WorkspaceExportResult answers workspace.export.
type WorkspaceExportResult struct {
	VM       string `json:"vm"`
	HostPath string `json:"host_path"`
	Branch   string `json:"branch,omitempty"` // full ref, "" with a patch
	Patch    string `json:"patch,omitempty"`
	Commit   string `json:"commit"`
	Base     string `json:"base"`
	Commits  int    `json:"commits"` // the guest's own commits kept
	Dirty    bool   `json:"dirty"`   // one more commit holds its uncommitted changes
}
