//! Record addresses to functions, resolved once per distinct address.

use rustc_hash::FxHashMap;
use vftrace_format::symbolizer::Symbolizer;

/// Slots of the direct-mapped cache in front of the hash map (a power of two).
const SLOTS: usize = 256;

/// One distinct address of the trace.
#[derive(Clone, Debug)]
pub struct Function {
    pub addr: u64,
    /// Index into [`FunctionTable::names`]: addresses with the same name share it (uftrace
    /// reports by name).
    pub name: u32,
    /// Size of its symbol (0 if unresolved).
    pub size: u64,
    /// False when no symbol contains the address (the name is then `<hex>`).
    pub resolved: bool,
}

/// Dense ids for the addresses of a trace and their (demangled) names, as uftrace prints them
/// (`<hex>` when unresolved). Ids are stable for the table's life; it grows with the number of
/// distinct functions, not with the number of calls.
pub struct FunctionTable<'s> {
    symbolizer: &'s Symbolizer,
    /// (address, id) by a hash of the address; `u32::MAX` marks an empty slot.
    slots: Box<[(u64, u32); SLOTS]>,
    index: FxHashMap<u64, u32>,
    functions: Vec<Function>,
    names: Vec<Box<str>>,
    by_name: FxHashMap<Box<str>, u32>,
}

impl<'s> FunctionTable<'s> {
    pub fn new(symbolizer: &'s Symbolizer) -> Self {
        FunctionTable {
            symbolizer,
            slots: Box::new([(0, u32::MAX); SLOTS]),
            index: FxHashMap::default(),
            functions: Vec::new(),
            names: Vec::new(),
            by_name: FxHashMap::default(),
        }
    }

    /// The id of the function at `addr`.
    #[inline]
    pub fn id(&mut self, addr: u64) -> u32 {
        // Fibonacci hashing: the top bits of the product mix all bits of the address.
        let slot = (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.ilog2())) as usize;
        let (cached, id) = self.slots[slot];
        if cached == addr && id != u32::MAX {
            return id;
        }
        let id = self.lookup(addr);
        self.slots[slot] = (addr, id);
        id
    }

    #[cold]
    fn lookup(&mut self, addr: u64) -> u32 {
        if let Some(&id) = self.index.get(&addr) {
            return id;
        }
        let (name, size, resolved) = match self.symbolizer.lookup_symbol(addr) {
            Some((_, sym)) => (sym.name.as_str().into(), sym.size, true),
            None => (format!("<{addr:x}>").into_boxed_str(), 0, false),
        };
        let name = self.intern(name);
        let id = self.functions.len() as u32;
        self.functions.push(Function {
            addr,
            name,
            size,
            resolved,
        });
        self.index.insert(addr, id);
        id
    }

    /// The name id of `name`, adding it if new.
    pub fn intern(&mut self, name: Box<str>) -> u32 {
        if let Some(&n) = self.by_name.get(&name) {
            return n;
        }
        let n = self.names.len() as u32;
        self.names.push(name.clone());
        self.by_name.insert(name, n);
        n
    }

    pub fn function(&self, id: u32) -> &Function {
        &self.functions[id as usize]
    }

    /// The name of function `id`.
    pub fn name_of(&self, id: u32) -> &str {
        &self.names[self.functions[id as usize].name as usize]
    }

    /// Every distinct name, by name id.
    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }

    /// Number of distinct addresses seen.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}
