'use strict';

// What people read: durations, sizes, addresses and aligned columns.

/** 5s, 3m, 2h, 4d: the largest whole unit. */
function humanDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return '-';
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

/** Bytes as megabytes (10^6), one decimal below 100. */
function humanMemory(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return '-';
  const mb = bytes / 1e6;
  return `${mb < 100 ? mb.toFixed(1) : Math.round(mb)} MB`;
}

function humanPercent(value) {
  return typeof value === 'number' && Number.isFinite(value) ? `${value.toFixed(1)}%` : '-';
}

function humanMs(value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '-';
  return `${value < 10 ? Number(value.toFixed(1)) : Math.round(value)} ms`;
}

/** An address as the primary reports it: a string already, or Node's address object. */
function describeAddress(info) {
  if (typeof info === 'string') return info;
  if (info === null || typeof info !== 'object') return String(info);
  if (info.addressType === -1 || info.addressType === 'unix') return `unix:${info.address}`;
  const udp = info.addressType === 'udp4' || info.addressType === 'udp6';
  const host = info.address === null || info.address === undefined ? '*' : info.address.includes(':') ? `[${info.address}]` : info.address;
  return `${udp ? 'udp ' : ''}${host}:${info.port}`;
}

function describeAddresses(addresses) {
  if (!Array.isArray(addresses) || addresses.length === 0) return '-';
  return addresses.map(describeAddress).join(', ');
}

/** Rows of cells under a header, each column as wide as its widest cell. */
function formatTable(header, rows) {
  const all = [header, ...rows].map((row) => row.map((cell) => String(cell)));
  const widths = header.map((_, column) => Math.max(...all.map((row) => row[column].length)));
  return all.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]))).join('  ')).join('\n');
}

module.exports = { humanDuration, humanMemory, humanPercent, humanMs, describeAddress, describeAddresses, formatTable };
