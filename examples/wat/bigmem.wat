;; bigmem: declares a 4 GiB minimum linear memory (65536 pages) and does nothing.
;; Shows instantiation being refused when the minimum exceeds the memory limit (-m).
(module
  (memory 65536)
  (func (export "_start")))
