package speaker

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sync"

	"github.com/zerohop/zerohop/speaker/bfd"
)

// BFDManager adapts a speaker/bfd Manager to the BFD hook: it turns the
// wanted sessions into AddPeer/RemovePeer calls and the Manager's state
// changes into up/down callbacks (down only for a real failure, not for
// the router taking its session down administratively; RFC 5882).
func BFDManager(m *bfd.Manager) BFD {
	return &bfdManager{m: m, current: map[netip.Addr]BFDSession{}}
}

type bfdManager struct {
	m       *bfd.Manager
	mu      sync.Mutex
	current map[netip.Addr]BFDSession
}

func (b *bfdManager) SetSessions(sessions []BFDSession) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	want := map[netip.Addr]BFDSession{}
	for _, s := range sessions {
		want[s.Peer] = s
	}
	var errs []error
	for peer := range b.current {
		if _, ok := want[peer]; ok {
			continue
		}
		if err := b.m.RemovePeer(peer); err != nil {
			errs = append(errs, fmt.Errorf("bfd peer %s: %w", peer, err))
			continue
		}
		delete(b.current, peer)
	}
	for peer, s := range want {
		if old, ok := b.current[peer]; ok && reflect.DeepEqual(old, s) {
			continue
		}
		prof, err := bfd.ProfileFrom(&s.Profile)
		if err != nil {
			errs = append(errs, fmt.Errorf("bfd peer %s: %w", peer, err))
			continue
		}
		if err := b.m.AddPeer(peer, s.Local, prof); err != nil {
			errs = append(errs, err)
			continue
		}
		b.current[peer] = s
	}
	return errors.Join(errs...)
}

func (b *bfdManager) Subscribe(fn func(peer netip.Addr, up bool)) {
	changes := b.m.Subscribe()
	go func() {
		for c := range changes {
			switch {
			case c.Failed():
				fn(c.Peer, false)
			case c.New == bfd.StateUp:
				fn(c.Peer, true)
			}
		}
	}()
}
