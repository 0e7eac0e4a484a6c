package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/errdefs"
	"banger/internal/rpc"
)

func (a *app) workspaceCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "workspace",
		Aliases: []string{"ws"},
		Short:   "Copy a checkout into a running VM, and bring the work back as a branch",
	}
	cmd.AddCommand(a.workspacePrepareCommand(), a.workspaceExportCommand())
	return cmd
}

func (a *app) workspacePrepareCommand() *cobra.Command {
	var p rpc.WorkspacePrepareParams
	cmd := &cobra.Command{
		Use:   "prepare NAME [PATH] [--dest /workspace]",
		Short: "Copy the git checkout at PATH (default: .) into the VM",
		Long: `Copy the git checkout PATH is in (default: the current directory) into the
running VM at --dest: tracked files and untracked files that are not
ignored, as they are in the work tree (dirty ones too), with modes and
symlinks (never followed), plus the repository's .git, so git log, status,
diff and commit work in the guest on the same history. Files are read and
git is run as you, not as root.

A second prepare into the same VM and dest sends only the files whose
content or mode changed since the first, and deletes in the guest what the
checkout no longer has (--full sends everything).

A PATH outside any git checkout is copied as a plain directory (every file,
no history); "banger workspace export" then has nothing to export onto.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.VM = args[0]
			dir := "."
			if len(args) == 2 {
				dir = args[1]
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			p.Path = abs
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				res, err := prepareWorkspace(cmd.Context(), c, p, false)
				if err != nil {
					return err
				}
				return a.printPrepared(res)
			})
		},
	}
	cmd.Flags().StringVar(&p.Dest, "dest", "/workspace", "where the checkout goes in the guest")
	cmd.Flags().BoolVar(&p.Full, "full", false, "send every file, not only what changed since the last prepare")
	return cmd
}

// prepareWorkspace calls workspace.prepare; gitOnly (banger run with no
// path) refuses a plain directory before anything is sent.
func prepareWorkspace(ctx context.Context, c *rpc.Client, p rpc.WorkspacePrepareParams, gitOnly bool) (rpc.WorkspacePrepareResult, error) {
	var res rpc.WorkspacePrepareResult
	params := struct {
		rpc.WorkspacePrepareParams
		GitOnly bool `json:"git_only,omitempty"`
	}{p, gitOnly}
	err := c.Call(ctx, rpc.MethodWorkspacePrepare, params, &res)
	return res, err
}

func (a *app) printPrepared(res rpc.WorkspacePrepareResult) error {
	if a.jsonOutput() {
		return printJSON(a.stdout, res)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(a.stderr, "banger: note: %s\n", n)
	}
	what := "plain directory (not a git checkout)"
	if res.IsGit {
		at := "no commit yet"
		if res.Base != "" {
			at = "at " + res.Base[:min(12, len(res.Base))]
		}
		switch {
		case res.Detached:
			what = "git checkout, detached HEAD " + at
		default:
			what = fmt.Sprintf("git checkout, branch %s %s", res.Branch, at)
		}
		what += fmt.Sprintf(", %d dirty, %d untracked", res.Dirty, res.Untracked)
	}
	kind := "full"
	if res.Incremental {
		kind = "incremental"
	}
	fmt.Fprintf(a.stdout, "Workspace %s (%s) -> vm %s:%s\n", res.HostPath, what, res.VM, res.Dest)
	fmt.Fprintf(a.stdout, "%s import: %d files in the guest, %d sent (%s, %s on the wire), %d deleted\n",
		kind, res.Files, res.Sent, humanBytes(res.SentBytes), humanBytes(res.WireBytes), res.Deleted)
	return nil
}

func (a *app) workspaceExportCommand() *cobra.Command {
	var p rpc.WorkspaceExportParams
	cmd := &cobra.Command{
		Use:   "export NAME [--branch B] [--force] [--patch FILE]",
		Short: "Bring the VM's work back as branch banger/NAME in the host checkout",
		Long: `Turn the guest's new commits and its uncommitted changes (modified, added,
deleted, renamed files, mode changes, symlinks) into commits on top of the
commit the workspace was prepared from, as branch banger/NAME (or --branch)
in the host checkout it came from. The host's working tree, index, HEAD
and other branches are never touched. An existing branch is refused unless
--force (never one checked out on the host). With --patch FILE a patch
(git diff --binary from the base) is written instead and the repository is
only read. Works whether or not the guest has git: without it, all the
guest's changes become one commit.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.VM = args[0]
			if p.Patch != "" {
				abs, err := filepath.Abs(p.Patch)
				if err != nil {
					return err
				}
				p.Patch = abs
			}
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				var res rpc.WorkspaceExportResult
				if err := c.Call(cmd.Context(), rpc.MethodWorkspaceExport, p, &res); err != nil {
					return err
				}
				if a.jsonOutput() {
					return printJSON(a.stdout, res)
				}
				var parts []string
				if res.Commits > 0 {
					parts = append(parts, fmt.Sprintf("%d commit(s) from the guest", res.Commits))
				}
				if res.Dirty {
					parts = append(parts, "1 commit of its uncommitted changes")
				}
				if len(parts) == 0 {
					parts = append(parts, "no changes")
				}
				short := res.Commit[:min(12, len(res.Commit))]
				if res.Patch != "" {
					fmt.Fprintf(a.stdout, "Wrote %s: %s on top of %s\n", res.Patch, strings.Join(parts, ", "), res.Base[:min(12, len(res.Base))])
					return nil
				}
				fmt.Fprintf(a.stdout, "Branch %s at %s in %s: %s\n", strings.TrimPrefix(res.Branch, "refs/heads/"), short, res.HostPath, strings.Join(parts, ", "))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&p.Branch, "branch", "", "branch to create (default banger/NAME)")
	cmd.Flags().BoolVar(&p.Force, "force", false, "move the branch if it exists")
	cmd.Flags().StringVar(&p.Patch, "patch", "", "write a patch to FILE instead of making a branch")
	return cmd
}

// runWorkspace is banger run's workspace step: dir given (--workspace) is
// imported whatever it is; no dir means the current directory, imported
// only when it is in a git checkout. It returns the guest working
// directory for the command ("" when nothing was imported).
func (a *app) runWorkspace(ctx context.Context, c *rpc.Client, vm, dir string) (string, error) {
	explicit := dir != ""
	if !explicit {
		dir = "."
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	res, err := prepareWorkspace(ctx, c, rpc.WorkspacePrepareParams{VM: vm, Path: abs}, !explicit)
	if err != nil {
		if !explicit && errdefs.IsFailedPrecondition(err) && strings.Contains(err.Error(), "not in a git checkout") {
			fmt.Fprintf(a.stderr, "banger: %s is not in a git checkout: no workspace copied (use --workspace DIR to copy a plain directory)\n", abs)
			return "", nil
		}
		return "", fmt.Errorf("prepare the workspace: %w", err)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(a.stderr, "banger: note: %s\n", n)
	}
	fmt.Fprintf(a.stderr, "banger: copied %s into vm %s at %s (%d files, %s)\n", res.HostPath, res.VM, res.Dest, res.Files, humanBytes(res.SentBytes))
	work := res.Dest
	if rel, err := filepath.Rel(res.HostPath, abs); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
		work = filepath.Join(res.Dest, rel)
	}
	return work, nil
}
