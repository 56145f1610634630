//! Encoders trained on windows of a user's sequence, every position a next-item target
//! (SASRec's; an HSTU-style block would be the next): `Padded`, how a batch of windows is laid
//! out in slots, and `WindowEncoder`, what training, inference, the exported layout and the
//! checkpoint's tensor names need of such an encoder, whatever its blocks are.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::sparse::Gathered;
use crate::model::tower::Pass;
use crate::ops::fused::l2_normalize;

/// The windows of a batch laid out in rows of `len` slots for the encoder. Each window is a
/// segment of consecutive slots, oldest item first; a slot attends to the slots of its own
/// segment up to itself (`first`), and takes the position embedding counted from its
/// segment's newest item, so a window's outputs do not depend on what shares its row.
#[derive(Debug, Clone)]
pub struct Padded {
    /// Slots per row.
    pub len: usize,
    /// Item ids, `len` per row (0 in padding slots).
    pub ids: Vec<u32>,
    /// Per slot, the first slot of its row it may attend to (its segment's start);
    /// [`PADDING`] for a padding slot, which attends to nothing and is never read.
    pub first: Vec<u32>,
    /// Per slot, how many items of its window are newer (0: the window's newest item; the
    /// position embedding is row `max_len - 1 -` this).
    pub(crate) from_newest: Vec<u32>,
    /// Per slot, the window it belongs to (0 for padding), for per-window side features.
    pub(crate) owners: Vec<u32>,
    /// Per window, the slot (`row * len + offset`) of its oldest item.
    pub starts: Vec<usize>,
}

/// The first key of a padding slot (it attends to nothing and is never read): the attention
/// kernel's marker.
pub use crate::ops::seq_op::PADDING;

/// Slots a window takes: an empty window is one padding item, so that it still has an output.
fn slots_of(window: &[u32]) -> usize {
    window.len().max(1)
}

impl Padded {
    /// One window per row, left-padded to the longest, so each row's newest item is its last
    /// slot (an empty window becomes one padding item, so that every row has an output).
    pub fn new<'a>(windows: impl IntoIterator<Item = &'a [u32]>) -> Self {
        let windows: Vec<&[u32]> = windows.into_iter().collect();
        let len = windows.iter().map(|w| slots_of(w)).max().unwrap_or(1);
        let rows: Vec<Vec<usize>> = (0..windows.len()).map(|w| vec![w]).collect();
        Self::lay_out(&windows, &rows, len, true)
    }

    /// The windows packed into as few rows of at most `capacity` slots as first-fit
    /// decreasing finds, padding at the ends of rows: a training batch of windows of mixed
    /// lengths runs on far fewer slots than one window per row (ML-1M at max_len 200: about
    /// 0.6 of them), with the same outputs at every window position.
    pub fn packed<'a>(windows: impl IntoIterator<Item = &'a [u32]>, capacity: usize) -> Self {
        let windows: Vec<&[u32]> = windows.into_iter().collect();
        let capacity = capacity.max(windows.iter().map(|w| slots_of(w)).max().unwrap_or(1));
        let mut order: Vec<usize> = (0..windows.len()).collect();
        order.sort_by_key(|&w| std::cmp::Reverse(slots_of(windows[w])));
        let (mut rows, mut fill): (Vec<Vec<usize>>, Vec<usize>) = (Vec::new(), Vec::new());
        for w in order {
            let need = slots_of(windows[w]);
            match fill.iter().position(|&f| f + need <= capacity) {
                Some(r) => {
                    rows[r].push(w);
                    fill[r] += need;
                }
                None => {
                    rows.push(vec![w]);
                    fill.push(need);
                }
            }
        }
        let len = fill.iter().copied().max().unwrap_or(1);
        Self::lay_out(&windows, &rows, len, false)
    }

    /// Rows of `len` slots holding the listed windows in order, padding before them (`left`)
    /// or after.
    fn lay_out(windows: &[&[u32]], rows: &[Vec<usize>], len: usize, left: bool) -> Self {
        let slots = rows.len() * len;
        let mut out = Padded {
            len,
            ids: vec![0; slots],
            first: vec![PADDING; slots],
            from_newest: vec![0; slots],
            owners: vec![0; slots],
            starts: vec![0; windows.len()],
        };
        for (r, members) in rows.iter().enumerate() {
            let used: usize = members.iter().map(|&w| slots_of(windows[w])).sum();
            let mut at = r * len + if left { len - used } else { 0 };
            for &w in members {
                let items = windows[w];
                let n = slots_of(items);
                let segment = at - r * len;
                out.starts[w] = at;
                for k in 0..n {
                    out.ids[at + k] = if items.is_empty() { 0 } else { items[k] };
                    out.first[at + k] = segment as u32;
                    out.from_newest[at + k] = (n - 1 - k) as u32;
                    out.owners[at + k] = w as u32;
                }
                at += n;
            }
        }
        out
    }

    pub fn rows(&self) -> usize {
        self.ids.len() / self.len
    }

    /// The slot of window `w`'s newest item (its output is the window's user vector).
    pub fn newest(&self, w: usize) -> usize {
        let oldest = self.starts[w];
        oldest + self.from_newest[oldest] as usize
    }

    /// The position table rows of every slot, for a table of `max_len` rows.
    pub(crate) fn position_rows(&self, max_len: usize) -> Vec<u32> {
        self.from_newest
            .iter()
            .map(|&d| (max_len - 1) as u32 - d)
            .collect()
    }
}

/// An encoder of windows: hidden states for every slot, from the items' rows and the user's
/// side inputs. Training scores every trainable slot against the catalogue; a user's vector is
/// the slot of its window's newest item.
pub trait WindowEncoder: std::fmt::Debug + Send + Sync {
    /// The newest items a window holds.
    fn max_len(&self) -> usize;

    /// Hidden states `[slots, dim]` of every slot of `windows` (`items` holds the rows of
    /// their item ids; `side` `[windows, side]` is added to each window's slots).
    fn forward(
        &self,
        items: &Gathered,
        windows: &Padded,
        side: Option<&Tensor>,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor>;

    /// The exported input layout's `encoder`: structure, tensor names, computation.
    fn describe(&self) -> serde_json::Value;

    /// The PyTorch counterpart of one of its own tensors (`None` for the shared kinds of
    /// tensor: linear layers, embeddings).
    fn torch_counterpart(&self, name: &str, shape: &[usize]) -> Option<String>;

    /// Each row's newest `max_len` history items: the encoder's input windows.
    fn windows<'r>(&self, histories: &[&'r [u32]]) -> Vec<&'r [u32]> {
        let max_len = self.max_len();
        histories
            .iter()
            .map(|h| &h[h.len().saturating_sub(max_len)..])
            .collect()
    }

    /// Hidden states `[B, len, dim]`: each row's window, left-padded to the longest (`len`),
    /// the newest at `len - 1`.
    fn hidden(
        &self,
        items: &Gathered,
        histories: &[&[u32]],
        side: Option<&Tensor>,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let layout = Padded::new(self.windows(histories));
        let hidden = self.forward(items, &layout, side, pass)?;
        Ok(hidden.reshape((layout.rows(), layout.len, ()))?)
    }

    /// User vectors `[B, dim]`: the hidden state at each row's newest position,
    /// L2-normalised.
    fn users(
        &self,
        items: &Gathered,
        histories: &[&[u32]],
        side: Option<&Tensor>,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let windows = self.windows(histories);
        // Packed several to a row (the same vectors as one window per row, `hidden`, on fewer
        // slots); each user's vector is its window's newest slot.
        let layout = Padded::packed(windows.iter().copied(), self.max_len());
        let hidden = self.forward(items, &layout, side, pass)?;
        let newest: Vec<u32> = (0..windows.len())
            .map(|w| layout.newest(w) as u32)
            .collect();
        let newest = Tensor::from_vec(newest, windows.len(), items.var.device())?;
        l2_normalize(&hidden.index_select(&newest, 0)?)
    }
}

/// Test support: packing windows into shared rows changes nothing a window computes. Every
/// position's hidden state (eight windows of mixed lengths over items `2..40` of `table`,
/// with `side_width` side features) equals the one from the window's own left-padded row.
#[cfg(test)]
pub(crate) fn assert_packing_changes_nothing(
    encoder: &dyn WindowEncoder,
    table: &crate::model::sparse::SparseTable,
    dim: usize,
    side_width: usize,
) {
    use crate::testing::values;
    let dev = candle_core::Device::Cpu;
    let windows: Vec<Vec<u32>> = [12usize, 3, 7, 1, 5, 9, 2, 4]
        .iter()
        .enumerate()
        .map(|(w, &n)| {
            (0..n as u32)
                .map(|k| 2 + (w as u32 * 5 + k * 3) % 38)
                .collect()
        })
        .collect();
    // Padding slots hold item 0, gathered like any other.
    let ids = std::iter::once(0).chain(windows.iter().flatten().copied());
    let items = table.gather(ids, &dev).unwrap();
    let side: Vec<f32> = (0..windows.len() * side_width)
        .map(|k| (k % 7) as f32 * 0.1 - 0.3)
        .collect();
    let side = (side_width > 0)
        .then(|| Tensor::from_vec(side, (windows.len(), side_width), &dev).unwrap());
    let run = |layout: &Padded| {
        let hidden = encoder
            .forward(&items, layout, side.as_ref(), &mut Pass::Infer)
            .unwrap();
        values(&hidden)
    };
    let separate = Padded::new(windows.iter().map(|w| w.as_slice()));
    let packed = Padded::packed(windows.iter().map(|w| w.as_slice()), encoder.max_len());
    assert!(packed.rows() < separate.rows(), "{} rows", packed.rows());
    let (a, b) = (run(&separate), run(&packed));
    for (w, window) in windows.iter().enumerate() {
        for k in 0..window.len() {
            let (i, j) = (separate.starts[w] + k, packed.starts[w] + k);
            let (x, y) = (&a[i * dim..(i + 1) * dim], &b[j * dim..(j + 1) * dim]);
            assert!(
                x.iter().zip(y).all(|(x, y)| (x - y).abs() < 1e-5),
                "window {w} position {k}: {x:?} vs {y:?}"
            );
        }
    }
}
