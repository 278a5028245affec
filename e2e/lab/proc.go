package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultStateDir holds the state file, logs and generated configs of the
// running lab. It is on tmpfs, so a reboot forgets a lab the reboot destroyed.
const DefaultStateDir = "/run/zerohop-lab"

// Proc is a process the lab started. Start (the kernel's start time in
// ticks) guards against killing an unrelated process that reused the PID.
type Proc struct {
	Name  string `json:"name"`
	NS    string `json:"ns,omitempty"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// State is what the lab records on disk so that `down` can remove
// everything, even after the process that built the lab crashed.
type State struct {
	Nodes      int               `json:"nodes"`
	Namespaces []string          `json:"namespaces"`
	RootLinks  []string          `json:"rootLinks"`
	Procs      []Proc            `json:"procs"`
	Dirs       []string          `json:"dirs"` // removed on down, besides the state dir
	APIServer  *APIServerInfo    `json:"apiServer,omitempty"`
	Pods       []Pod             `json:"pods"`
	Services   []ServiceRef      `json:"services"`
	Extra      map[string]string `json:"extra,omitempty"`
}

// APIServerInfo tells later commands where the lab's API server is.
type APIServerInfo struct {
	URL        string `json:"url"`
	Kubeconfig string `json:"kubeconfig"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func readState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state %s: %w", statePath(dir), err)
	}
	return &st, nil
}

func writeState(dir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(dir))
}

// procStart reads the start time of pid from /proc/pid/stat (field 22), and
// whether it is a zombie.
func procStart(pid int) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false, err
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false, errors.New("short stat")
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return start, f[0] == "Z", err
}

// alive reports whether p still runs (and is the same process).
func (p Proc) alive() bool {
	if p.PID <= 1 {
		return false // never signal a process group, init, or everyone
	}
	start, zombie, err := procStart(p.PID)
	return err == nil && !zombie && start == p.Start
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs. It never signals a
// process whose start time differs from the recorded one.
func (p Proc) stop(grace time.Duration) error {
	if !p.alive() {
		return nil
	}
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p.alive() {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
	}
	for range 100 {
		if !p.alive() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("process %s (pid %d) survived SIGKILL", p.Name, p.PID)
}

// spawnSpec describes a process to start, optionally inside a namespace.
type spawnSpec struct {
	name string
	ns   string // "" = root namespace
	// netOnly enters only ns's network namespace, keeping the host's
	// mounts: `ip netns exec` remounts /sys, which hides the host's
	// bpffs, and a speaker's pins must outlive it there.
	netOnly bool
	argv    []string
	logDir  string
	detach  bool      // survive the lab process (make lab); else die with it
	stdin   io.Reader // optional
	stdout  io.Writer // optional; default: the log file
	env     []string
}

// NetnsCommand is the argv prefix that runs a command in network namespace
// ns with the host's mounts (and so its /sys/fs/bpf); nsenter execs the
// command, so the PID is the command's own.
func NetnsCommand(ns string) []string {
	return []string{"nsenter", "--net=/run/netns/" + ns, "--"}
}

// spawn starts the process. `ip netns exec` execs the target, so the PID we
// get is the PID of the target itself.
func spawn(s spawnSpec) (Proc, *exec.Cmd, error) {
	argv := s.argv
	switch {
	case s.ns != "" && s.netOnly:
		argv = append(NetnsCommand(s.ns), argv...)
	case s.ns != "":
		argv = append([]string{"ip", "netns", "exec", s.ns}, argv...)
	}
	logf, err := os.OpenFile(filepath.Join(s.logDir, s.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return Proc{}, nil, err
	}
	defer func() { _ = logf.Close() }() // the child has its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = s.stdin
	cmd.Stdout, cmd.Stderr = logf, logf
	if s.stdout != nil {
		cmd.Stdout = s.stdout
	}
	cmd.Env = append(os.Environ(), s.env...)
	// A session of its own keeps a terminal's ^C from reaching lab processes
	// when `make lab` returns; test-owned processes still die with the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !s.detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return Proc{}, nil, fmt.Errorf("start %s: %w", s.name, err)
	}
	p := Proc{Name: s.name, NS: s.ns, PID: cmd.Process.Pid}
	// Reap in the background, whatever happens, so no zombie is left.
	go func() { _ = cmd.Wait() }()
	var serr error
	for range 50 {
		if p.Start, _, serr = procStart(p.PID); serr == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if serr != nil {
		return p, cmd, fmt.Errorf("%s exited at once; see %s: %w", s.name, filepath.Join(s.logDir, s.name+".log"), serr)
	}
	return p, cmd, nil
}
