package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/errdefs"
	"banger/internal/rpc"
)

func (a *app) runCommand() *cobra.Command {
	var p rpc.VMCreateParams
	var rm, noWorkspace bool
	var workspaceDir string
	cmd := &cobra.Command{
		Use:   "run --image IMAGE [--name NAME] [--rm] [--no-workspace | --workspace DIR] [-- CMD [ARG...]]",
		Short: "Create a VM, then run a command in it or open a shell",
		Long: `Create a VM from an image and boot it (progress on stderr), then run CMD in
it as "banger exec" does (no shell in between; stdin is streamed when it is
not a terminal; Ctrl-C is forwarded to the command as SIGINT, a second one
abandons the command), or, with no CMD, open a shell as "banger shell" does.
The exit status is the command's.

Run in a git checkout, it first copies the checkout into the VM at
/workspace (as "banger workspace prepare" does) and runs the command or
shell there (in the same subdirectory you ran it from); "banger workspace
export NAME" brings the work back as branch banger/NAME. Outside a git
checkout nothing is copied (it says so): like docker run, the VM does not
get your current directory unless you ask, with --workspace DIR, which
copies DIR even if it is a plain directory. --no-workspace copies nothing.

--rm removes the VM afterwards, whatever happened: also when the command
fails, when the create fails, and on Ctrl-C (a create in progress is then
cancelled). Without --rm the VM keeps running, and Ctrl-C during the create
stops following it, not the create.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if p.Image == "" {
				return errors.New("--image is required: name the image to boot (`banger image ls` lists them; there is no default image)")
			}
			if a.jsonOutput() {
				return errors.New("-o json: run prints the command's own output; use `banger create -o json` and `banger exec` instead")
			}
			ws := workspaceDir
			if noWorkspace {
				if ws != "" {
					return errors.New("--no-workspace and --workspace exclude each other")
				}
				ws = "-"
			}
			return a.runInNewVM(cmd.Context(), p, args, rm, ws)
		},
	}
	f := cmd.Flags()
	// Flags end at the command: "run --image i ls -l" runs "ls -l".
	f.SetInterspersed(false)
	f.StringVar(&p.Image, "image", "", "image to boot (required)")
	f.StringVar(&p.Name, "name", "", "VM name, also its host name (default: vm-<random>)")
	f.StringVar(&p.Kernel, "kernel", "", "kernel (default: the image's, else the default kernel)")
	f.IntVar(&p.VCPUs, "cpus", 0, "vCPUs (default: vm_vcpus from the config)")
	f.IntVar(&p.MemoryMiB, "mem", 0, "memory in MiB (default: vm_memory_mib from the config)")
	f.IntVar(&p.DiskGiB, "disk", 0, "disk size in GiB (default: the image's size)")
	f.BoolVar(&rm, "rm", false, "remove the VM afterwards (also on failure and Ctrl-C)")
	f.BoolVar(&noWorkspace, "no-workspace", false, "do not copy the current git checkout into the VM")
	f.StringVar(&workspaceDir, "workspace", "", "copy DIR (a checkout or a plain directory) into the VM at /workspace (default: the current directory's git checkout, if any)")
	return cmd
}

// runInNewVM creates a VM from p, copies the workspace in (ws: "" the
// current checkout if any, "-" none, else that directory), runs argv in it
// (a shell when empty) and, with rm, removes it whatever happened. ctx
// ends on the first Ctrl-C.
func (a *app) runInNewVM(ctx context.Context, p rpc.VMCreateParams, argv []string, rm bool, ws string) (err error) {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// Not ctx: an interrupt during this short call would leave a create
	// whose operation this command never heard of, so it could not cancel
	// or remove it. An interrupt is seen by followOp just after.
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var started rpc.VMStarted
	err = c.Call(cctx, rpc.MethodVMCreate, p, &started)
	cancel()
	if err != nil {
		return err
	}
	name, ref := started.VM.Name, started.VM.ID
	if ref == "" {
		ref = name
	}
	if rm {
		defer func() { err = a.removeAfterRun(c, ref, name, err) }()
	}
	// With rm an interrupted create is cancelled; its failure releases
	// everything it took, the VM's row included.
	if _, err := a.followOp(ctx, c, started.OpID, rm, "banger op watch "+started.OpID); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errInterrupted
	}
	workdir := ""
	if ws != "-" {
		if workdir, err = a.runWorkspace(ctx, c, ref, ws); err != nil {
			return err
		}
	}
	if len(argv) == 0 {
		return a.shellIn(c, rpc.VMExecParams{VM: ref, Workdir: workdir}, name)
	}
	code, err := a.runCommandIn(c, rpc.VMExecParams{VM: ref, Argv: argv, Workdir: workdir})
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// runCommandIn runs p as exec does (stdin streamed when it is not a
// terminal), except that a second interrupt abandons the command: the
// daemon kills it and run goes on to remove the VM.
func (a *app) runCommandIn(c *rpc.Client, p rpc.VMExecParams) (int, error) {
	ctx, abandon := context.WithCancel(context.Background())
	defer abandon()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		for n := 0; ; {
			select {
			case <-sigs:
				if n++; n == 2 {
					fmt.Fprintf(a.stderr, "banger: interrupted again: abandoning the command in vm %s\n", p.VM)
					abandon()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	code, err := a.execCall(ctx, c, p, !isTerminal(os.Stdin))
	if err != nil && ctx.Err() != nil {
		return 0, errInterrupted
	}
	return code, err
}

// removeAfterRun removes the VM run made (force: it runs) and returns
// runErr, the run's own outcome, which decides the exit status. A VM that
// is already gone (a failed or cancelled create) is fine. A failed removal
// is reported; it turns a success into exit status 1.
func (a *app) removeAfterRun(c *rpc.Client, ref, name string, runErr error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := c.Call(ctx, rpc.MethodVMRemove, rpc.VMRemoveParams{Ref: ref, Force: true}, nil)
	if err == nil || errors.Is(err, errdefs.ErrNotFound) {
		return runErr
	}
	fmt.Fprintf(a.stderr, "banger: remove vm %s: %v (remove it with `banger rm --force %s`)\n", name, err, name)
	if runErr == nil {
		return exitError{code: 1}
	}
	return runErr
}
