"""energy stage: spike recordings (``spikefile``), exact op counts (``counter``), energy models
as data (``models`` + ``presets/*.toml``) and the report (``report``); see docs/DESIGN.md "Energy model"."""
