//! A small builder of ONNX graphs: named inputs with dynamic dimensions, constants
//! (initializers), single-output nodes in the order they are added (which is a topological
//! order, since a node can only name values that exist), and named outputs.

use std::collections::HashSet;

use prost::Message;

use super::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto,
    TypeProto, ValueInfoProto, attribute_type, data_location, data_type,
};

/// The operator set the graphs are written for: 17 has `LayerNormalization`, and the
/// reductions take their axes as an input (`ReduceSum` since 13). onnxruntime has run it since
/// 1.14 (2023).
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17 (ONNX 1.12).
const IR_VERSION: i64 = 8;

/// One dimension of an input or output.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    Fixed(usize),
    /// A dimension the caller chooses per call, by name (`batch`).
    Named(&'static str),
}

/// An element type of an input or output.
#[derive(Debug, Clone, Copy)]
pub enum Elem {
    F32,
    I64,
}

impl Elem {
    fn code(self) -> i32 {
        match self {
            Elem::F32 => data_type::FLOAT,
            Elem::I64 => data_type::INT64,
        }
    }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        i: value,
        r#type: attribute_type::INT,
        ..AttributeProto::default()
    }
}

pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        ints: values.to_vec(),
        r#type: attribute_type::INTS,
        ..AttributeProto::default()
    }
}

pub fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        f: value,
        r#type: attribute_type::FLOAT,
        ..AttributeProto::default()
    }
}

fn value_info(name: &str, elem: Elem, dims: &[Dim], doc: &str) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match *d {
                Dim::Fixed(n) => DimensionValue::DimValue(n as i64),
                Dim::Named(s) => DimensionValue::DimParam(s.to_owned()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: elem.code(),
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        doc_string: doc.to_owned(),
    }
}

/// A graph under construction.
#[derive(Debug, Default)]
pub struct Graph {
    graph: GraphProto,
    /// Intermediate values made so far (their names are `v<n>`).
    values: usize,
    /// Constants by name, so that a tensor used twice is stored once.
    constants: HashSet<String>,
}

impl Graph {
    pub fn new(name: &str, doc: &str) -> Self {
        Graph {
            graph: GraphProto {
                name: name.to_owned(),
                doc_string: doc.to_owned(),
                ..GraphProto::default()
            },
            ..Graph::default()
        }
    }

    /// Declares an input; returns its name.
    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim], doc: &str) -> String {
        self.graph.input.push(value_info(name, elem, dims, doc));
        name.to_owned()
    }

    /// Whether a constant of this name was stored.
    pub fn has_constant(&self, name: &str) -> bool {
        self.constants.contains(name)
    }

    /// Whether an input of this name was declared.
    pub fn has_input(&self, name: &str) -> bool {
        self.graph.input.iter().any(|i| i.name == name)
    }

    fn constant(&mut self, name: &str, code: i32, dims: &[usize], raw: Vec<u8>) -> String {
        if self.constants.insert(name.to_owned()) {
            self.graph.initializer.push(TensorProto {
                dims: dims.iter().map(|&d| d as i64).collect(),
                data_type: code,
                name: name.to_owned(),
                raw_data: raw,
                ..TensorProto::default()
            });
        }
        name.to_owned()
    }

    /// A float constant named `name` (stored once however often it is asked for).
    pub fn f32s(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let mut raw = Vec::new();
        extend_le_bytes(&mut raw, values);
        self.f32_bytes(name, dims, raw)
    }

    /// A float constant from its little-endian bytes ([`extend_le_bytes`]), for tables
    /// converted a block of rows at a time rather than through a whole copy of their values.
    pub fn f32_bytes(&mut self, name: &str, dims: &[usize], raw: Vec<u8>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>() * 4, raw.len());
        self.constant(name, data_type::FLOAT, dims, raw)
    }

    /// An int64 constant named `name`.
    pub fn i64s(&mut self, name: &str, dims: &[usize], values: &[i64]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len());
        let mut raw = Vec::with_capacity(values.len() * 8);
        for v in values {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.constant(name, data_type::INT64, dims, raw)
    }

    /// A small anonymous int64 constant (axes, shapes, indices).
    pub fn ints(&mut self, dims: &[usize], values: &[i64]) -> String {
        let name = format!(
            "const_{}",
            values
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join("_")
        ) + &format!("_d{}", dims.len());
        self.i64s(&name, dims, values)
    }

    /// A float scalar constant.
    pub fn scalar(&mut self, value: f32) -> String {
        self.f32s(&format!("const_f{:08x}", value.to_bits()), &[], &[value])
    }

    /// A node with one output; returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.values += 1;
        let output = format!("v{}", self.values);
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.clone()],
            name: format!("{op}_{}", self.values),
            op_type: op.to_owned(),
            attribute: attributes,
        });
        output
    }

    /// Declares `value` as the graph's output `name`.
    pub fn output(&mut self, value: &str, name: &str, elem: Elem, dims: &[Dim], doc: &str) {
        self.graph.node.push(NodeProto {
            input: vec![value.to_owned()],
            output: vec![name.to_owned()],
            name: format!("output_{name}"),
            op_type: "Identity".to_owned(),
            attribute: Vec::new(),
        });
        self.graph.output.push(value_info(name, elem, dims, doc));
    }

    /// Bytes of every constant (what the model file holds beyond its small graph).
    pub fn constant_bytes(&self) -> usize {
        self.graph
            .initializer
            .iter()
            .map(|t| t.raw_data.len())
            .sum()
    }

    /// The serialised model; with `external` (a file name beside the model), every constant
    /// of at least [`EXTERNAL_MIN_BYTES`] goes to that file instead, as ONNX's external data:
    /// the only way past protobuf's 2 GiB limit on one message. The constants move into the
    /// returned [`ExternalFile`] as they are: the file is written from them, never gathered
    /// into one buffer (at 10 M items that was a second copy of a 1.26 GB table).
    pub fn serialise(mut self, external: Option<&str>) -> Serialised {
        let data = external.map(|location| {
            let mut data = ExternalFile::default();
            for tensor in &mut self.graph.initializer {
                if tensor.raw_data.len() < EXTERNAL_MIN_BYTES {
                    continue;
                }
                let offset = data.len.next_multiple_of(EXTERNAL_ALIGN);
                let raw = std::mem::take(&mut tensor.raw_data);
                let entry = |key: &str, value: String| StringStringEntryProto {
                    key: key.to_owned(),
                    value,
                };
                tensor.external_data = vec![
                    entry("location", location.to_owned()),
                    entry("offset", offset.to_string()),
                    entry("length", raw.len().to_string()),
                ];
                tensor.data_location = data_location::EXTERNAL;
                data.len = offset + raw.len();
                data.tensors.push((offset, raw));
            }
            data
        });
        let model = ModelProto {
            ir_version: IR_VERSION,
            producer_name: "recall-export".to_owned(),
            producer_version: env!("CARGO_PKG_VERSION").to_owned(),
            doc_string: self.graph.doc_string.clone(),
            graph: Some(self.graph),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
        }
        .encode_to_vec();
        Serialised { model, data }
    }
}

/// Constants smaller than this stay inside the model file when the rest goes to external data
/// (onnx's own `convert_model_to_external_data` default).
pub const EXTERNAL_MIN_BYTES: usize = 1024;
/// Each external tensor starts at a multiple of this, so that a reader can map it in place.
const EXTERNAL_ALIGN: usize = 4096;

/// Appends `values` to `raw` as little-endian bytes (ONNX's `raw_data`).
pub fn extend_le_bytes(raw: &mut Vec<u8>, values: &[f32]) {
    raw.reserve(values.len() * 4);
    for v in values {
        raw.extend_from_slice(&v.to_le_bytes());
    }
}

/// A serialised model, and its external-data file's contents when it has one.
#[derive(Debug)]
pub struct Serialised {
    pub model: Vec<u8>,
    pub data: Option<ExternalFile>,
}

/// An external-data file: each constant's bytes at its offset, zeros between.
#[derive(Debug, Default)]
pub struct ExternalFile {
    /// `(offset, bytes)`, in file order.
    tensors: Vec<(usize, Vec<u8>)>,
    /// The file's length in bytes (where the next constant's alignment counts from).
    len: usize,
}

impl ExternalFile {
    /// Writes the file's bytes to `w`.
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut at = 0;
        for (offset, raw) in &self.tensors {
            w.write_all(&vec![0; offset - at])?;
            w.write_all(raw)?;
            at = offset + raw.len();
        }
        Ok(())
    }
}

/// Checks what onnxruntime checks first when it loads a graph: every value a node reads is a
/// graph input, a constant or an earlier node's output, names are not defined twice, and every
/// graph output is defined. Returns the first violation.
pub fn well_formed(graph: &GraphProto) -> Result<(), String> {
    let mut defined: HashSet<&str> = HashSet::new();
    let inputs = graph.input.iter().map(|i| i.name.as_str());
    for name in inputs.chain(graph.initializer.iter().map(|t| t.name.as_str())) {
        if !defined.insert(name) {
            return Err(format!("`{name}` is defined twice"));
        }
    }
    for node in &graph.node {
        if let Some(missing) = node.input.iter().find(|i| !defined.contains(i.as_str())) {
            return Err(format!(
                "node {} reads `{missing}` before it exists",
                node.name
            ));
        }
        for output in &node.output {
            if !defined.insert(output) {
                return Err(format!("`{output}` is defined twice"));
            }
        }
    }
    match graph
        .output
        .iter()
        .find(|o| !defined.contains(o.name.as_str()))
    {
        Some(o) => Err(format!("output `{}` is never computed", o.name)),
        None => Ok(()),
    }
}
