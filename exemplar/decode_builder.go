//go:build dedupelabels

package exemplar

import "github.com/prometheus/prometheus/model/labels"

// The decoder builds each label set with its ScratchBuilder, which interns
// the strings it is given: the arena they point into is never reset.

func newLabelDecoder() labelDecoder { return labelDecoder{b: labels.NewScratchBuilder(4)} }

func (d *labelDecoder) reset() { d.b.Reset() }

func (d *labelDecoder) add(name, value string) { d.b.Add(name, value) }

func (d *labelDecoder) finish() labels.Labels { return d.b.Labels() }
