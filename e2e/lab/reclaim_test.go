package lab

import (
	"os"
	"testing"
)

// A lab whose recorded processes still run is never reclaimed, whatever
// else is on the machine: only a killed run's leftovers are.
func TestAbandonedKeepsALiveLab(t *testing.T) {
	start, _, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	live := Proc{Name: "zerohop", PID: os.Getpid(), Start: start}
	if err := writeState(dir, &State{Procs: []Proc{live}}); err != nil {
		t.Fatal(err)
	}
	if abandoned(dir) {
		t.Errorf("abandoned(%s) = true with %s (pid %d) alive", dir, live.Name, live.PID)
	}
}
