"""livevox's MCP client: outbound connections to the MCP servers a session names (the official
`mcp` SDK, Streamable HTTP; legacy HTTP+SSE for URLs ending in `/sse`), behind the operator's
host allow-list. Knows nothing of the realtime protocol."""
