package importrules

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// loadGraph asks the go command for banger's import graph.
func loadGraph(t *testing.T) Graph {
	t.Helper()
	g := Graph{Direct: map[string][]string{}, Deps: map[string][]string{}}
	run := func(args ...string) []byte {
		cmd := exec.Command("go", args...)
		cmd.Dir = "../.."
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	parse := func(out []byte, into map[string][]string) {
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 {
				continue
			}
			for _, f := range fields[1:] {
				if strings.HasPrefix(f, module+"/") {
					into[fields[0]] = append(into[fields[0]], f)
				}
			}
		}
	}
	parse(run("list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./..."), g.Direct)
	parse(run("list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./..."), g.Deps)
	if len(g.Direct) == 0 {
		t.Fatal("go list found no banger packages")
	}
	return g
}

func TestImportRules(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command over the whole module; skipped in -short")
	}
	g := loadGraph(t)
	if _, ok := g.Direct[cliPkg]; !ok {
		t.Fatalf("graph has no %s; is the test running in the module?", cliPkg)
	}
	for _, v := range Violations(g) {
		t.Error(v)
	}
}

// TestViolationsCatchesEachRule proves the checker is not vacuous: a graph
// with one of each forbidden edge yields one violation each.
func TestViolationsCatchesEachRule(t *testing.T) {
	const (
		fcproc  = daemonPkg + "/fcproc"
		dmsnap  = daemonPkg + "/dmsnap"
		store   = module + "/internal/store"
		rpc     = module + "/internal/rpc"
		opstate = daemonPkg + "/opstate"
	)
	g := Graph{
		Direct: map[string][]string{
			cliPkg: {daemonPkg},                   // allowed
			store:  {daemonPkg},                   // forbidden: not the CLI
			fcproc: {module + "/internal/system"}, // allowed
		},
		Deps: map[string][]string{
			fcproc:                   {module + "/internal/system", daemonPkg}, // leaf -> daemon
			dmsnap:                   {opstate},                                // leaf -> leaf
			opstate + "/inner":       {opstate},                                // same leaf: allowed
			rpc:                      {module + "/internal/errdefs", cliPkg},   // shared -> cli
			daemonPkg:                {opstate, fcproc, store},                 // allowed
			module + "/internal/cli": {daemonPkg, opstate},                     // allowed
		},
	}
	got := Violations(g)
	var heads []string
	for _, v := range got {
		head, _, _ := strings.Cut(v, ":")
		heads = append(heads, head)
	}
	want := []string{
		dmsnap + " depends on " + opstate,
		fcproc + " depends on " + daemonPkg,
		rpc + " depends on " + cliPkg,
		store + " imports " + daemonPkg,
	}
	if diff := cmp.Diff(want, heads); diff != "" {
		t.Fatalf("violations (-want +got):\n%s\nfull:\n%s", diff, strings.Join(got, "\n"))
	}
}
