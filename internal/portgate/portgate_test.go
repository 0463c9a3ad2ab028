package portgate

import "testing"

func TestGate(t *testing.T) {
	var g Gate
	if g.Admit(1000) {
		t.Fatal("unannounced port admitted")
	}
	g.Expect(1000)
	if !g.Admit(1000) {
		t.Fatal("announced port refused")
	}
	if g.Admit(1000) {
		t.Fatal("announcement used twice")
	}
}
