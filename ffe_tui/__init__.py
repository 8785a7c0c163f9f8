"""The ffe operator console (Textual). Entry point: `ffe_tui.app.run_console`."""
