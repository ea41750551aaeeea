//go:build dedupelabels

package exemplar

import "github.com/prometheus/prometheus/model/labels"

// The decoder builds each label set with its ScratchBuilder.

func newLabelDecoder() labelDecoder { return labelDecoder{b: labels.NewScratchBuilder(4)} }

func (d *labelDecoder) reset() { d.b.Reset() }

func (d *labelDecoder) add(name, value string) { d.b.Add(name, value) }

func (d *labelDecoder) finish() labels.Labels {
	ls := d.b.Labels()
	if builderCopiesStrings {
		d.arena = d.arena[:0]
	}
	return ls
}
