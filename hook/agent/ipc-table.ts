/**
 * The IPC message table (protocol/ipc.ts IpcMessages) as the agent carries it: each request's event and
 * its reply's JSON Schema, which protocol/json-shape.ts checks. hook/build-agent.mjs writes the value in
 * at bundle time from `agentIpcTable()`, so the agent shares the redirector's schemas without loading
 * zod (json-shape.ts says why).
 */
import type { AgentIpcTable } from '../../protocol/ipc';

/** Replaced by esbuild's `define` with the table's JSON. */
declare const UNDERPASS_IPC_TABLE: AgentIpcTable;

export const ipcTable: AgentIpcTable = UNDERPASS_IPC_TABLE;
